"""The one part of the build that pyproject.toml cannot declare: the optional compiled packet path.

`optional=True`: where no C compiler or Python headers are at hand (Home Assistant OS installing
from a source distribution, say), the build goes on without it and the media engine forwards in
pure Python (`sip_core.media.fastpath`).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sip_core.media._fastpath",
            sources=["sip_core/media/_fastpath.c"],
            optional=True,
        )
    ]
)
