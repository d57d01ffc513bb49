"""Data-parallel sharding: 8 emulated CPU devices train exactly like 1 device.

The device count is fixed when JAX starts, so the multi-device runs are subprocesses of
``_train_script.py`` with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from diffjax import training

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "_train_script.py")


def _launch(workdir, devices, *args):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  return subprocess.Popen(
      [sys.executable, SCRIPT, "--workdir", str(workdir), *map(str, args)], env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, workdir):
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  with open(os.path.join(workdir, "result.json")) as f:
    result = json.load(f)
  rows = training.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return result, rows


def test_eight_devices_match_one_device(tmp_path):
  """First 20 losses on 8 emulated devices equal the 1-device run to <= 1e-5 (also with a
  4-step lax.scan per call, batch sharded on axis 1), and an indivisible batch is refused."""
  dirs = {k: tmp_path / k for k in ("one", "eight", "eight_scan")}
  procs = {
      "one": _launch(dirs["one"], 1, "--num_steps", 20, "--batch_size", 64),
      "eight": _launch(dirs["eight"], 8, "--num_steps", 20, "--batch_size", 64,
                       "--check_batch", 12),
      "eight_scan": _launch(dirs["eight_scan"], 8, "--num_steps", 20, "--batch_size", 64,
                            "--n_jitted_steps", 4),
  }
  results = {k: _finish(p, dirs[k]) for k, p in procs.items()}
  (r1, rows1), (r8, rows8), (r8s, rows8s) = (results[k] for k in ("one", "eight", "eight_scan"))
  assert r1["device_count"] == 1 and r8["device_count"] == 8 and r8s["device_count"] == 8
  assert r8["n_shards"] == 8  # the state really lives on all 8 devices
  loss1 = np.array([r["loss"] for r in rows1])
  loss8 = np.array([r["loss"] for r in rows8])
  loss8s = np.array([r["loss"] for r in rows8s])
  assert [r["step"] for r in rows1] == list(range(1, 21))
  assert [r["step"] for r in rows8] == [r["step"] for r in rows8s] == list(range(1, 21))
  np.testing.assert_allclose(loss8, loss1, rtol=0, atol=1e-5)
  np.testing.assert_allclose(loss8s, loss1, rtol=0, atol=1e-5)
  assert loss1[-5:].mean() < loss1[:5].mean()  # it trains
  err = r8["check_batch_error"]
  assert "data.batch_size" in err and "(8)" in err and "12" in err


def test_make_mesh_and_errors():
  mesh = training.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.shape["data"] == jax.device_count()
  mesh2 = training.make_mesh(("data", "fsdp"))
  assert mesh2.shape == {"data": jax.device_count(), "fsdp": 1}
  with pytest.raises(ValueError, match="device count"):
    training.make_mesh(("data",), shape=(jax.device_count() + 1,))
  with pytest.raises(ValueError, match="same length"):
    training.make_mesh(("data", "fsdp"), shape=(1,))


def test_shard_batch_replicate_and_sharded_step():
  mesh = training.make_mesh()
  batch = training.shard_batch({"x": np.ones((4, 2), np.float32)}, mesh)
  assert batch["x"].sharding.spec == P("data")
  stacked = training.shard_batch({"x": np.ones((3, 4, 2), np.float32)}, mesh, batch_axis=1)
  assert stacked["x"].sharding.spec == P(None, "data")
  with pytest.raises(ValueError, match="no batch axis"):
    training.shard_batch({"x": np.ones((3,), np.float32)}, mesh, batch_axis=1)
  tree = training.replicate({"w": jnp.arange(3.0)}, mesh)
  assert tree["w"].sharding.spec == P()

  def step(state, b):
    return state + jnp.sum(b["x"]), {"s": jnp.sum(b["x"])}

  jitted = training.make_sharded_step(step, mesh, donate=False)
  new, m = jitted(jnp.zeros(()), batch)
  assert float(new) == 8.0 and float(m["s"]) == 8.0


def test_two_processes_match_one_device(tmp_path):
  """Multi-host path: 2 processes x 4 CPU devices joined by ``jax.distributed`` (gloo
  collectives), each feeding its half of the global batch through
  ``jax.make_array_from_process_local_data``, log the 1-device losses (<= 1e-5)."""
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  one_dir, multi_dir = tmp_path / "one", tmp_path / "multi"
  args = ("--num_steps", 10, "--batch_size", 64, "--ckpt_every", 5)
  one = _launch(one_dir, 1, *args)
  procs = [_launch(multi_dir, 4, *args, "--coordinator", f"localhost:{port}",
                   "--num_processes", 2, "--process_id", i) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  r1, rows1 = _finish(one, one_dir)
  with open(multi_dir / "result.json") as f:
    rm = json.load(f)
  assert rm["device_count"] == 8 and rm["n_shards"] == 8 and rm["step"] == 10
  rows_m = training.read_jsonl(str(multi_dir / "metrics.jsonl"))  # written by process 0 only
  assert [r["step"] for r in rows_m] == list(range(1, 11))
  np.testing.assert_allclose([r["loss"] for r in rows_m], [r["loss"] for r in rows1],
                             rtol=0, atol=1e-5)
  assert sorted(os.listdir(multi_dir / "checkpoints")) == ["10", "5"]
