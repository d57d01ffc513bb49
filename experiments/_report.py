"""Writing a results section into experiments/README.md (shared by the experiment scripts)."""
import os

HEADER = "# Experiments\n\nEach section is produced by the command it names.\n"


def write_section(out_dir, marker, section):
  """Puts `section` (starting with the `marker` heading) into `out_dir/README.md`.

  An existing section with the same heading is replaced in place; a hand-written "Reading (...)"
  paragraph at its end is kept. A new section is appended.
  """
  path = os.path.join(out_dir, "README.md")
  old = open(path).read() if os.path.exists(path) else HEADER
  start = old.find(marker)
  if start < 0:
    new = old.rstrip("\n") + "\n\n" + section
  else:
    end = old.find("\n## ", start + 1)
    end = len(old) if end < 0 else end + 1
    reading = old.find("\nReading (", start, end)
    kept = old[reading + 1:end].rstrip("\n") + "\n" if reading >= 0 else ""
    new = old[:start] + section + ("\n" + kept if kept else "") + ("\n" if end < len(old) else "") + old[end:]
  with open(path, "w") as f:
    f.write(new)
