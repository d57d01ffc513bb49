"""Every distillation config builds and validates: the toy configs (default and tiny, each task) and the
paper configs, whose teacher config files must exist and build too."""
import importlib.util
import os

import pytest

from diffjax import distill

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TOY = ("dmd2", "diff_instruct", "sim", "cd", "ict", "progressive")
PAPER = [("dmd2/imagenet64.py", ""), ("dmd2/imagenet64.py", "no_gan"), ("cd/cifar10.py", ""), ("ict/cifar10.py", ""),
         ("progressive/cifar10.py", ""), ("diff_instruct/cifar10.py", ""), ("sim/cifar10.py", "")]


def _load(relpath):
  spec = importlib.util.spec_from_file_location("cfg_" + relpath.replace("/", "_")[:-3], os.path.join(ROOT, "configs", relpath))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("method", TOY)
def test_toy_configs_validate_for_every_task(method):
  module = _load(f"{method}/toy.py")
  for options in ("", "ring", "grid,tiny", "digits", "digits,tiny"):
    config = module.get_config(options)
    distill.validate_distill_config(config)
    assert config.method == method
    teacher = distill.teacher.load_config_file(config.teacher.config_path, config.teacher.config_options)
    assert teacher.model.parametrization == "edm" and teacher.process.name == "edm"
  with pytest.raises(ValueError, match="valid: a task in"):
    module.get_config("cifar10")


@pytest.mark.parametrize("relpath,options", PAPER)
def test_paper_configs_validate_and_their_teachers_build(relpath, options):
  config = _load(relpath).get_config(options)
  distill.validate_distill_config(config)
  teacher = distill.teacher.load_config_file(config.teacher.config_path, config.teacher.config_options)
  assert teacher.model.parametrization == "edm" and teacher.data.name.startswith("tfds:")


def test_distillation_and_preference_configs_load_in_one_process():
  """Both families import a shared helper module by name from their own directory; the names must
  differ, or whichever loads second silently gets the other's helpers (module cache)."""
  for relpath in ("dmd2/toy.py", "diffusion_dpo/toy.py", "cd/toy.py", "rank_dpo/toy.py", "dmd2/imagenet64.py",
                  "diffusion_dpo/paper.py"):
    config = _load(relpath).get_config("")
    expected = relpath.split("/")[0]
    assert config.method == expected, (relpath, config.method)
    assert ("teacher" in config) == (expected in TOY)
