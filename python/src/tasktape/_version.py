"""The package's version, as sent in `User-Agent` and worker registrations."""

__version__ = "0.1.0"
USER_AGENT = f"tasktape-py/{__version__}"
WORKER_VERSION = f"tasktape-py {__version__}"
