"""MRI Bundles: the library that every bundle of the collection imports.

Bundle configs name library objects by `_target_` strings (`mribundles.configs.path`,
`mribundles.bundles.bundle_root`, transforms, networks, handlers), which MONAI imports itself;
their few remaining `$` expressions need the light submodules imported here, because MONAI binds
`import a.b` to the name `a.b`.

Importing the library leaves the process as it was (no matplotlib backend, no environment
variable, no exception hook), with one exception: in a MONAI bundle run. There the entry point
is MONAI's (``python -m monai.bundle run``) and a config's ``$import mribundles`` is the first
code of ours to run, before MONAI's own checks of the command line (its ``--tracking`` makes the
output folder first) and before any handler exists.
So in that process alone the import installs the hook that reports refused input as one line
(`mribundles.errors.install_excepthook`); `mribundles.errors.is_monai_bundle_run` says which
process that is. The `mribundles` command reports refusals in `mribundles.cli.main` itself.
"""

from mribundles import bundles, data, handlers, sample_data, tracking
from mribundles.errors import InvalidInputError, install_excepthook, is_monai_bundle_run

if is_monai_bundle_run():
    install_excepthook()

__all__ = ["InvalidInputError", "bundles", "data", "handlers", "sample_data", "tracking"]
__version__ = "0.1.0"
