"""When a record was made and with what: the one stamp that evaluation reports, benchmark
records and export manifests carry."""

from __future__ import annotations

import datetime
import platform


def stamp() -> dict:
    """{"date": UTC ISO 8601 to the second, "versions": {jaxseg, jax, jaxlib, flax, python}}."""
    import flax
    import jax
    import jaxlib

    from jaxseg import __version__

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": {
            "jaxseg": __version__,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "python": platform.python_version(),
        },
    }
