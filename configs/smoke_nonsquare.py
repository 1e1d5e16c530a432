"""The smoke config at a non-square input, 64 high and 48 wide (heatmaps 8 x 6): the tests'
end-to-end run of a ``(height, width)`` input (train, eval, predict, calibrate, export).

Its numbers are never results on real data; it proves a non-square input runs everywhere.
"""

from configs import smoke


def get_config():
  c = smoke.get_config()
  c.data.input_size = (64, 48)  # (height, width), as COCO's top-down 256 x 192
  c.model.wasp_rates = (3, 2, 1)  # an 8 x 6 final map
  return c
