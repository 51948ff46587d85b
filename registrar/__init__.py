# sipcore first: it picks the compiled build or the sources before any of ours loads.
import sipcore  # noqa: F401
