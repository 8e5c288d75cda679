"""Shared code for the course *Deep Learning for Computer Vision*.

One concept per module: ``runtime`` (seeds, profiles, provenance), ``data`` (data sets and the
in-memory ``TensorLoader``), ``train`` (``fit`` / ``evaluate``), ``metrics``, ``viz`` and ``models``.
Importing the package does no work: no data is read and nothing is downloaded.
"""

__version__ = "0.1.0"

from course_utils.runtime import by_profile, get_profile, setup  # noqa: E402

__all__ = ["__version__", "by_profile", "get_profile", "setup"]
