"""Metric and image logging: JSONL, TensorBoard event files (no TensorFlow), PNG helpers.

The TensorBoard writer writes the TFRecord framing and the ``Event``/``Summary`` protobufs by
hand: each record is ``uint64 length | uint32 masked_crc32c(length) | data |
uint32 masked_crc32c(data)``, with the masked CRC ``((crc >> 15 | crc << 17) + 0xa282ead8)``.
Only the fields TensorBoard needs for scalars and PNG images are written; ``read_events``
reads them back (and checks every CRC).
"""
import json
import os
import socket
import struct
import time

import numpy as np

# ----------------------------------------------------------------------------- CRC32C


def _crc32c_table():
  poly = 0x82F63B78
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ poly if c & 1 else c >> 1
    table.append(c)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of ``data``; ``crc32c(b'123456789') == 0xE3069283``."""
  crc = 0xFFFFFFFF
  table = _CRC_TABLE
  for b in data:
    crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """The TFRecord masked CRC of ``data``."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- protobuf


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _key(field: int, wire: int) -> bytes:
  return _varint((field << 3) | wire)


def _len_field(field: int, payload: bytes) -> bytes:
  return _key(field, 2) + _varint(len(payload)) + payload


def _event(step: int, *, wall_time: float | None = None, summary: bytes | None = None,
           file_version: str | None = None) -> bytes:
  """Serializes ``tensorboard.Event`` (wall_time=1 double, step=2 int64, file_version=3,
  summary=5)."""
  out = _key(1, 1) + struct.pack("<d", time.time() if wall_time is None else wall_time)
  out += _key(2, 0) + _varint(int(step))
  if file_version is not None:
    out += _len_field(3, file_version.encode())
  if summary is not None:
    out += _len_field(5, summary)
  return out


def _scalar_value(tag: str, value: float) -> bytes:
  """``Summary.Value`` with tag=1 and simple_value=2 (float)."""
  return _len_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(value))


def _image_value(tag: str, png: bytes, height: int, width: int, channels: int) -> bytes:
  """``Summary.Value`` with tag=1 and image=4 (height=1, width=2, colorspace=3, encoded=4)."""
  image = (_key(1, 0) + _varint(height) + _key(2, 0) + _varint(width) + _key(3, 0) +
           _varint(channels) + _len_field(4, png))
  return _len_field(1, tag.encode()) + _len_field(4, image)


def _parse(buf: bytes) -> list[tuple[int, int, object]]:
  """Decodes one protobuf message into ``(field, wire_type, value)`` triples."""
  out, i = [], 0
  while i < len(buf):
    key, i = _read_varint(buf, i)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, i = _read_varint(buf, i)
    elif wire == 1:
      value, i = buf[i:i + 8], i + 8
    elif wire == 5:
      value, i = buf[i:i + 4], i + 4
    elif wire == 2:
      n, i = _read_varint(buf, i)
      value, i = buf[i:i + n], i + n
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")
    out.append((field, wire, value))
  return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
  shift = result = 0
  while True:
    b = buf[i]
    i += 1
    result |= (b & 0x7F) << shift
    shift += 7
    if not b & 0x80:
      return result, i


# ----------------------------------------------------------------------------- TensorBoard


class EventFileWriter:
  """Writes scalars and PNG images to a TensorBoard event file ``logdir/events.out.tfevents.*``.

  Args:
    logdir: directory of the event file (created).
  """

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "ab")
    self._write(_event(0, file_version="brain.Event:2"))
    self.flush()

  def _write(self, data: bytes):
    header = struct.pack("<Q", len(data))
    self._f.write(header + struct.pack("<I", masked_crc32c(header)) + data +
                  struct.pack("<I", masked_crc32c(data)))

  def scalars(self, step: int, values: dict):
    """Writes one event holding every ``tag -> float`` of ``values`` at ``step``."""
    summary = b"".join(_len_field(1, _scalar_value(k, v)) for k, v in values.items())
    self._write(_event(step, summary=summary))

  def image(self, step: int, tag: str, image):
    """Writes an image (``(H, W[, C])``, uint8 or float in [0, 1]) as PNG at ``step``."""
    img = _to_uint8(np.asarray(image), (0.0, 1.0))
    png = encode_png(img)
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    self._write(_event(step, summary=_len_field(1, _image_value(tag, png, h, w, c))))

  def flush(self):
    self._f.flush()

  def close(self):
    if not self._f.closed:
      self._f.close()


def read_records(path: str):
  """Yields the payloads of a TFRecord file, checking both CRCs of every record."""
  with open(path, "rb") as f:
    data = f.read()
  i = 0
  while i < len(data):
    if len(data) - i < 12:
      raise ValueError(f"{path}: truncated record header at byte {i}")
    header = data[i:i + 8]
    (n,) = struct.unpack("<Q", header)
    (hcrc,) = struct.unpack("<I", data[i + 8:i + 12])
    if hcrc != masked_crc32c(header):
      raise ValueError(f"{path}: bad length CRC at byte {i}")
    payload = data[i + 12:i + 12 + n]
    (dcrc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
    if len(payload) != n or dcrc != masked_crc32c(payload):
      raise ValueError(f"{path}: bad data CRC at byte {i}")
    yield payload
    i += 16 + n


def read_events(path: str) -> list[dict]:
  """Decodes an event file into dicts ``{'step', 'wall_time', 'scalars': {tag: value},
  'images': {tag: (height, width, png bytes)}, 'file_version'}``."""
  events = []
  for rec in read_records(path):
    ev = dict(step=0, wall_time=None, scalars={}, images={}, file_version=None)
    for field, _, value in _parse(rec):
      if field == 1:
        ev["wall_time"] = struct.unpack("<d", value)[0]
      elif field == 2:
        ev["step"] = value
      elif field == 3:
        ev["file_version"] = value.decode()
      elif field == 5:
        for f, _, v in _parse(value):
          if f != 1:
            continue
          parts = {ff: vv for ff, _, vv in _parse(v)}
          tag = parts[1].decode()
          if 2 in parts:
            ev["scalars"][tag] = struct.unpack("<f", parts[2])[0]
          if 4 in parts:
            img = {ff: vv for ff, _, vv in _parse(parts[4])}
            ev["images"][tag] = (img.get(1), img.get(2), img.get(4))
    events.append(ev)
  return events


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """All scalars of every event file in ``logdir``: ``tag -> [(step, value), ...]`` by time."""
  out: dict[str, list] = {}
  files = sorted(f for f in os.listdir(logdir) if f.startswith("events.out.tfevents."))
  for name in files:
    for ev in read_events(os.path.join(logdir, name)):
      for tag, value in ev["scalars"].items():
        out.setdefault(tag, []).append((ev["step"], value))
  return out


# ----------------------------------------------------------------------------- metric writer


def _jsonable(v):
  v = np.asarray(v)
  if v.dtype == bool:
    return bool(v)
  if np.issubdtype(v.dtype, np.integer):
    return int(v)
  if v.ndim == 0:
    f = float(v)
    return f if np.isfinite(f) else str(f)  # 'nan' / 'inf' keep the JSONL strict-JSON
  return v.tolist()


class MetricWriter:
  """Writes metrics to ``workdir/metrics.jsonl`` (one JSON object per line) and TensorBoard.

  Only process 0 writes; on other processes every method is a no-op.

  Args:
    workdir: run directory; metrics go to ``metrics.jsonl`` and ``tb/``.
    tensorboard: also write TensorBoard event files under ``workdir/tb``.
    resume_step: when given, lines of an existing ``metrics.jsonl`` with ``step`` greater than
      this are dropped first (they came after the checkpoint being resumed from).
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True, resume_step: int | None = None):
    import jax  # local: logging helpers stay importable without touching a backend
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None and os.path.exists(self.path):
      _truncate_jsonl(self.path, resume_step)
    self._f = open(self.path, "a")
    if tensorboard:
      self._tb = EventFileWriter(os.path.join(workdir, "tb"))

  def write(self, step: int, metrics: dict, prefix: str = ""):
    """Logs ``metrics`` (scalars) at ``step``; keys get ``prefix`` prepended."""
    if not self.active:
      return
    row = {prefix + k: _jsonable(v) for k, v in metrics.items()}
    self._f.write(json.dumps({"step": int(step), **row}) + "\n")
    self._f.flush()
    if self._tb is not None:
      scal = {k: float(np.asarray(v)) for k, v in row.items()
              if not isinstance(v, list) and not isinstance(v, str)}
      self._tb.scalars(step, scal)
      self._tb.flush()

  def image(self, step: int, tag: str, image):
    """Logs an image to TensorBoard (``EventFileWriter.image``)."""
    if self.active and self._tb is not None:
      self._tb.image(step, tag, image)
      self._tb.flush()

  def close(self):
    if not self.active:
      return
    self._f.close()
    if self._tb is not None:
      self._tb.close()


def _truncate_jsonl(path: str, max_step: int):
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line).get("step", 0) <= max_step:
        keep.append(line)
    except json.JSONDecodeError:
      continue  # a line cut short by a crash
  if len(keep) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
  """The rows of a ``metrics.jsonl`` file."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- images


def _to_uint8(images: np.ndarray, value_range) -> np.ndarray:
  if images.dtype == np.uint8:
    return images
  lo, hi = value_range
  x = (images.astype(np.float64) - lo) / (hi - lo)
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a uint8 ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` image."""
  import io

  from matplotlib import image as mpimg
  img = np.asarray(image)
  if img.ndim == 3 and img.shape[2] == 1:
    img = img[..., 0]
  buf = io.BytesIO()
  if img.ndim == 2:
    mpimg.imsave(buf, img, format="png", cmap="gray", vmin=0, vmax=255)
  else:
    mpimg.imsave(buf, img, format="png")
  return buf.getvalue()


def image_grid(images, *, ncols: int | None = None, padding: int = 1,
               value_range=(0.0, 1.0)) -> np.ndarray:
  """Tiles ``(N, H, W[, C])`` images into one uint8 ``(rows*H', cols*W', C)`` array.

  Args:
    images: uint8, or floats mapped from ``value_range`` to [0, 255] (clipped).
    ncols: images per row; default ``ceil(sqrt(N))``.
    padding: pixels of black between tiles.
    value_range: (low, high) of float images, e.g. (-1, 1) for data scaled to [-1, 1].
  """
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
  x = _to_uint8(x, value_range)
  n, h, w, c = x.shape
  ncols = ncols or int(np.ceil(np.sqrt(n)))
  nrows = int(np.ceil(n / ncols))
  grid = np.zeros((nrows * (h + padding) + padding, ncols * (w + padding) + padding, c), np.uint8)
  for i in range(n):
    r, q = divmod(i, ncols)
    y0, x0 = padding + r * (h + padding), padding + q * (w + padding)
    grid[y0:y0 + h, x0:x0 + w] = x[i]
  return grid


def save_image_grid(path: str, images, *, ncols: int | None = None, padding: int = 1,
                    value_range=(0.0, 1.0), upscale: int = 1) -> np.ndarray:
  """Writes ``images`` as one PNG grid (see ``image_grid``), each pixel repeated ``upscale``
  times along both axes (for tiny images such as 8x8 digits); returns the grid array."""
  grid = image_grid(images, ncols=ncols, padding=padding, value_range=value_range)
  if upscale > 1:
    grid = np.repeat(np.repeat(grid, upscale, axis=0), upscale, axis=1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(encode_png(grid))
  return grid


def save_scatter(path: str, points, *, reference=None, lim=None, title: str | None = None,
                 size: float = 2.0):
  """Writes a 2-D scatter plot PNG with matplotlib's Agg canvas (no pyplot global state).

  Args:
    path: output file.
    points: ``(N, 2)`` samples.
    reference: optional ``(M, 2)`` points (e.g. data) drawn underneath in grey.
    lim: axis limit ``L`` (square ``[-L, L]^2``) or ``((xmin, xmax), (ymin, ymax))``.
    title: figure title.
    size: marker size.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  pts = np.asarray(points)
  if pts.ndim != 2 or pts.shape[1] != 2:
    raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
  fig = Figure(figsize=(4, 4), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  if reference is not None:
    ref = np.asarray(reference)
    ax.scatter(ref[:, 0], ref[:, 1], s=size, c="0.75", linewidths=0)
  ax.scatter(pts[:, 0], pts[:, 1], s=size, c="C0", linewidths=0)
  if lim is not None:
    (x0, x1), (y0, y1) = ((-lim, lim), (-lim, lim)) if np.isscalar(lim) else lim
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
  ax.set_aspect("equal")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png")
