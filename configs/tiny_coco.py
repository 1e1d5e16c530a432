"""``tiny_mpii``'s tiny CPU network on ``coco`` (its real format; the tests prepare tiny
files of it), evaluated by its protocol on the person's crop. Never a result."""

from configs import tiny_mpii


def get_config():
  c = tiny_mpii.get_config()
  c.data.train_sources = ("coco",)
  c.data.eval_source = "coco"
  c.data.eval_split = "validation"
  return c
