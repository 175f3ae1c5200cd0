"""MRI Bundles: the library that every bundle of the collection imports.

Bundle configs say `"$import mribundles"` and then name `mribundles.data.kspace_slices`,
`mribundles.bundles.bundle_root`, ...: MONAI binds `import a.b` to the name `a.b`, so the light
submodules that configs call are imported here. Transforms, networks and handlers are named by
`_target_` strings, which MONAI imports itself.
"""

from mribundles import bundles, data, handlers, sample_data, tracking
from mribundles.errors import InvalidInputError, install_excepthook

install_excepthook()

__all__ = ["InvalidInputError", "bundles", "data", "handlers", "sample_data", "tracking"]
__version__ = "0.1.0"
