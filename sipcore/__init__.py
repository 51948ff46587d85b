# Before any hot-path module is imported: compiled build or sources (sipcore/accel.py).
from sipcore import accel as _accel  # noqa: F401
