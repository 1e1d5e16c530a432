"""UniPose with DARK and the single-stage person box: unbiased encoding, Taylor (dark)
decoding, and the box head's five maps (centre and corners of the labeled joints'
extent) trained with the same codec and evaluated by box IoU and centre error."""

from configs import dark_lsp


def get_config():
  c = dark_lsp.get_config()
  c.model.box_head = True
  return c
