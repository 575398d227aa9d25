"""jaxseg: semantic segmentation in JAX.

The package namespace stays light (importing jaxseg imports no jax); `jaxseg.Segmenter`
loads on first use:

    seg = jaxseg.Segmenter.from_workdir("runs/mem")
    labels = seg.predict(image_u8)
"""

__all__ = ["Segmenter", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Segmenter":
        from jaxseg.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'jaxseg' has no attribute {name!r}")
