"""The code policy for received bundles: which callables a config may name, and the logging file.

A MONAI config is a program. ``_target_`` names any importable callable (``torch.os.system`` is
one: torch re-exports ``os``), ``$`` strings are ``eval``-ed, and ``logging.conf`` is read with
``logging.config.fileConfig``. So a bundle that no trusted key signed may instantiate only the
callables in `ALLOWED_TARGETS`, matched by *identity*: a ``_target_`` is resolved the way MONAI
resolves it (short names through `monai.bundle.ComponentLocator`, then a dotted-path lookup like
``pydoc.locate``) and the object it reaches must be one of the listed objects. A re-export
(``torch.os.system``, ``monai.apps.utils.shutil.rmtree``) reaches ``os.system`` or
``shutil.rmtree``, which are not listed, whatever package prefix it is spelt with.

Resolving never imports anything: a path is followed only through modules already imported, so
reviewing a bundle cannot run code that the bundle names (``scripts.evil``, ``unittest.__main__``).
A name that does not resolve that way is not allowed.
"""

from __future__ import annotations

import configparser
import json
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

__all__ = [
    "ALLOWED_TARGETS",
    "STANDARD_LOGGING_CONF",
    "allowed_objects",
    "config_targets",
    "PLAIN_MODES",
    "logging_differences",
    "mode_problem",
    "monai_target_path",
    "target_problem",
]

# The callables an unsigned bundle may instantiate, by full dotted name.
#
# How the list is made (re-run this when a bundle starts using a new class):
#   1. every ``_target_`` of bundles/*/configs/*.json, with MONAI's short names ("Compose",
#      "SupervisedTrainer") resolved as MONAI resolves them (`monai_target_path`):
#        python -c "from mribundles.sharing.policy import config_targets; import glob; \
#                   print(*sorted(config_targets(glob.glob('bundles/*'))), sep='\n')"
#   2. plus the public classes (``__all__``) of mribundles.transforms, .networks, .handlers and
#      .chains that no shipped config names yet (marked "library" below).
# tests/test_code_policy.py checks that every shipped ``_target_`` is covered and that every
# name resolves to a class or a function. The functions are the configs' named steps (paths,
# the device, running an engine: `mribundles.configs`, `mribundles.distributed`), which replace
# ``$`` expressions; none takes a name to import, evaluate or look up. Nothing here may run a
# shell, unpickle, download or evaluate strings: keep it that way when adding a name. The list bounds which callables run, not their arguments:
# writers (SaveImaged, CheckpointSaver, MetricsSaver, ReconstructionWriter) still write wherever
# a config's arguments say, as the user running the bundle.
ALLOWED_TARGETS: tuple[str, ...] = (
    "monai.data.dataloader.DataLoader",
    "monai.data.dataset.CacheDataset",
    "monai.data.dataset.Dataset",
    "monai.data.dataset.SmartCacheDataset",
    "monai.data.samplers.DistributedSampler",
    "monai.engines.evaluator.SupervisedEvaluator",
    "monai.engines.trainer.SupervisedTrainer",
    "monai.handlers.checkpoint_loader.CheckpointLoader",
    "monai.handlers.checkpoint_saver.CheckpointSaver",
    "monai.handlers.hausdorff_distance.HausdorffDistance",
    "monai.handlers.lr_schedule_handler.LrScheduleHandler",
    "monai.handlers.mean_dice.MeanDice",
    "monai.handlers.metrics_saver.MetricsSaver",
    "monai.handlers.smartcache_handler.SmartCacheHandler",
    "monai.handlers.stats_handler.StatsHandler",
    "monai.handlers.from_engine",
    "monai.handlers.validation_handler.ValidationHandler",
    "monai.inferers.inferer.SimpleInferer",
    "monai.inferers.inferer.SlidingWindowInferer",
    "monai.losses.dice.DiceCELoss",
    "monai.losses.ssim_loss.SSIMLoss",
    "monai.networks.nets.unet.UNet",
    "monai.transforms.compose.Compose",
    "monai.transforms.compose.OneOf",
    "monai.transforms.croppad.dictionary.CropForegroundd",
    "monai.transforms.croppad.dictionary.DivisiblePadd",
    "monai.transforms.croppad.dictionary.RandCropByPosNegLabeld",
    "monai.transforms.croppad.dictionary.RandSpatialCropd",
    "monai.transforms.intensity.dictionary.MaskIntensityd",
    "monai.transforms.intensity.dictionary.NormalizeIntensityd",
    "monai.transforms.intensity.dictionary.RandAdjustContrastd",
    "monai.transforms.intensity.dictionary.RandBiasFieldd",
    "monai.transforms.intensity.dictionary.RandGaussianNoised",
    "monai.transforms.intensity.dictionary.RandGaussianSmoothd",
    "monai.transforms.intensity.dictionary.RandScaleIntensityd",
    "monai.transforms.intensity.dictionary.RandShiftIntensityd",
    "monai.transforms.intensity.dictionary.ScaleIntensityRangePercentilesd",
    "monai.transforms.io.dictionary.SaveImaged",
    "monai.transforms.post.dictionary.AsDiscreted",
    "monai.transforms.post.dictionary.Invertd",
    "monai.transforms.spatial.dictionary.Orientationd",
    "monai.transforms.spatial.dictionary.RandAffined",
    "monai.transforms.spatial.dictionary.RandFlipd",
    "monai.transforms.spatial.dictionary.RandRotate90d",
    "monai.transforms.spatial.dictionary.ResampleToMatchd",
    "monai.transforms.spatial.dictionary.Spacingd",
    "monai.transforms.utility.dictionary.EnsureTyped",
    "monai.transforms.utility.dictionary.CopyItemsd",
    "monai.transforms.utility.dictionary.ToDeviced",
    "monai.utils.set_determinism",
    "mribundles.adaptation.BundleAdaptation",
    "mribundles.bundles.bundle_root",
    "mribundles.chains.PipelineChain",
    "mribundles.chains.ReconStage",
    "mribundles.chains.RegStage",  # library
    "mribundles.chains.SegStage",
    "mribundles.chains.SuperResStage",  # library
    "mribundles.chains.joint.KspaceSlabs",
    "mribundles.chains.joint.ReconSegLoss",
    "mribundles.chains.joint.ReconSegNetwork",
    "mribundles.chains.joint.read_bundle_config",
    "mribundles.chains.joint.SlabBatch",
    "mribundles.chains.joint.slice_preprocessing",
    "mribundles.configs.attach",
    "mribundles.configs.concat",
    "mribundles.configs.device",
    "mribundles.configs.for_sampling",
    "mribundles.configs.load_checkpoint",
    "mribundles.configs.on_device",
    "mribundles.configs.parameters",
    "mribundles.configs.path",
    "mribundles.configs.run",
    "mribundles.configs.sample_dir",
    "mribundles.configs.sampling_label",
    "mribundles.data.file_items",
    "mribundles.data.image_label_pairs",
    "mribundles.data.kspace_slices",
    "mribundles.data.registration_pairs",
    "mribundles.distributed.attach",
    "mribundles.distributed.data_parallel",
    "mribundles.distributed.finish",
    "mribundles.distributed.init",
    "mribundles.distributed.iteration_sampler",
    "mribundles.distributed.local_device",
    "mribundles.distributed.mixture_sampler",
    "mribundles.distributed.rank_handlers",
    "mribundles.distributed.run_shard",
    "mribundles.distributed.seed_by_rank",
    "mribundles.distributed.shard",
    "mribundles.engines.PrepareBatchKeys",
    "mribundles.handlers.ReconMetric",
    "mribundles.handlers.ReconstructionWriter",
    "mribundles.handlers.RegistrationReport",
    "mribundles.handlers.SegmentationOverlayWriter",
    "mribundles.handlers.sr_figure.SuperResolutionFigure",
    "mribundles.handlers.volume_metric.VolumeMetric",
    "mribundles.networks.CoarseVoxelMorph",
    "mribundles.networks.ImageUnet",
    "mribundles.networks.NormUnet",  # library
    "mribundles.networks.ReconResNet",
    "mribundles.networks.RecurrentVarNet",
    "mribundles.networks.ResidualUNet3d",
    "mribundles.networks.Unet",  # library
    "mribundles.networks.VarNet",
    "mribundles.registration.RegistrationLoss",
    "mribundles.sample_data.multislice_kspace_demo",
    "mribundles.sample_data.path",
    "mribundles.sample_data.radial_kspace_demo",
    "mribundles.sample_data.thick_slice_kspace_demo",
    "mribundles.handlers.RunReport",
    "mribundles.handlers.from_engine_class",
    "mribundles.handlers.slice_names",
    "mribundles.synth.SyntheticKspaceDataset",
    "mribundles.synth.SyntheticPairDataset",
    "mribundles.synth.SyntheticSegmentationDataset",
    "mribundles.tracking.RunLineage",
    "mribundles.tracking.tracking_uri",
    "mribundles.transforms.AffineAlignd",
    "mribundles.transforms.CropKspaced",  # library
    "mribundles.transforms.GridRadiald",
    "mribundles.transforms.LoadKspaced",
    "mribundles.transforms.LoadRadialKspaced",
    "mribundles.transforms.LoadVolumed",
    "mribundles.transforms.NamePaird",
    "mribundles.transforms.NormalizeKspaced",
    "mribundles.transforms.RSSImaged",  # library
    "mribundles.transforms.RandDiffeomorphicPaird",
    "mribundles.transforms.RandUndersampleKspaced",
    "mribundles.transforms.ReferenceImaged",
    "mribundles.transforms.RestoreIntensityd",
    "mribundles.transforms.RestoreScaled",
    "mribundles.transforms.ScaleIntensityByPercentiled",
    "mribundles.transforms.SelectSpokesd",
    "mribundles.transforms.SimulateLowResd",
    "mribundles.transforms.SynthesizeHeadd",
    "mribundles.transforms.ToHighResGridd",
    "mribundles.transforms.UndersampleKspaced",
    "mribundles.transforms.Warpd",
    "mribundles.transforms.ZeroBackgroundd",
    "mribundles.transforms.ZeroFilld",
    "mribundles.transforms.degradation_list",
    "mribundles.transforms.is_foreground",
    "mribundles.transforms.synthetic_degradation_list",
    "torch.nn.MSELoss",
    "torch.nn.parallel.DistributedDataParallel",
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.utils.data.ConcatDataset",
    "torch.utils.data.DataLoader",
    "torch.utils.data.RandomSampler",
)

# `_mode_` values that call the target plainly; "debug" runs it under pdb, which reads .pdbrc.
PLAIN_MODES = ("default", "callable")

# Every bundle of the collection ships exactly this logging.conf. MONAI applies a bundle's
# configs/logging.conf with `logging.config.fileConfig` before it parses any config, and that
# function eval()s `class` and `args`. MONAI 1.6.1 refuses calls there and classes outside
# `logging`, but a FileHandler with literal `args=('/home/me/.bashrc', 'w')` still truncates a
# file, so any content other than this is treated as code.
STANDARD_LOGGING_CONF = """\
[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


@lru_cache(maxsize=1)
def _locator():
    """MONAI's table of short names (built from the monai modules imported by `import monai`)."""
    import monai  # noqa: F401  (MONAI's own import loads the submodules the table is built from)
    from monai.bundle import ComponentLocator

    return ComponentLocator()


def monai_target_path(target: str) -> str:
    """The dotted path MONAI instantiates for ``target``, as ``ConfigComponent.resolve_module_name``
    makes it: a short name the component locator knows ("Compose") becomes
    ``<module>.<name>`` (the first module when several define it, as MONAI picks); anything else
    is used as written."""
    module = _locator().get_component_module_name(target)
    if isinstance(module, list):
        module = module[0]
    return f"{module}.{target}" if module else target


def _locate_loaded(path: str):
    """``pydoc.locate(path)`` (what MONAI's ``instantiate`` calls) without importing anything.

    Like pydoc: empty parts are dropped, the longest leading run of module names is taken as a
    module, the rest are attributes. Only modules already in ``sys.modules`` are used, so a path
    into a module that is not imported yet resolves to None (not allowed) instead of running its
    import. Returns None when the path does not resolve.
    """
    parts = [part for part in path.split(".") if part]
    n = 0
    while n < len(parts) and ".".join(parts[: n + 1]) in sys.modules:
        n += 1
    if n == 0:  # pydoc would import it, or look it up in builtins: never an allowed callable
        return None
    obj = sys.modules[".".join(parts[:n])]
    for part in parts[n:]:
        try:
            obj = getattr(obj, part)
        except Exception:  # AttributeError, or whatever a lazy module __getattr__ raises
            return None
    return obj


@lru_cache(maxsize=1)
def allowed_objects() -> dict[int, tuple[str, object]]:
    """``id(obj) -> (name, obj)`` for every resolvable name of `ALLOWED_TARGETS` (this imports
    them: they are our own and MONAI's/torch's modules). The objects are kept in the values so
    their ids stay valid. A name that no longer resolves, or whose module fails to import, is left
    out (and fails the tests)."""
    import pydoc

    table = {}
    for name in ALLOWED_TARGETS:
        try:
            obj = pydoc.locate(name)
        except pydoc.ErrorDuringImport:  # a module of ours that fails to import allows nothing
            obj = None
        if obj is not None:
            table[id(obj)] = (name, obj)
    return table


def target_problem(value) -> str | None:
    """Why a ``_target_`` value is outside the policy, or None when it names an allowed callable."""
    if not isinstance(value, str):
        return f"_target_ is a {type(value).__name__}, not a name (MONAI calls whatever it builds)"
    if value.startswith("$"):
        return "_target_ is a $ expression (evaluated by MONAI)"
    if value.startswith(("@", "%")):
        return "_target_ is a reference (MONAI calls whatever it points to)"
    allowed = allowed_objects()  # first: it imports the allowed names' modules, which the lookup follows
    path = monai_target_path(value)
    obj = _locate_loaded(path)
    if obj is not None and id(obj) in allowed:
        return None
    notes = [] if path == value else [f"MONAI resolves it to {path}"]
    if obj is not None and hasattr(obj, "__qualname__"):
        notes.append(f"it is {getattr(obj, '__module__', None) or '?'}.{obj.__qualname__}")
    return "_target_ not on the allowed list" + (f" ({'; '.join(notes)})" if notes else "")


def mode_problem(value) -> str | None:
    """Why a ``_mode_`` value is outside the policy, or None for a plain call."""
    if isinstance(value, str) and value in PLAIN_MODES:
        return None
    return f"_mode_ {value!r} (only {', '.join(PLAIN_MODES)} call the target plainly; 'debug' runs pdb)"


def _ini_content(text: str) -> dict[str, dict[str, str]]:
    """Sections -> options -> raw values, as `fileConfig`'s parser reads them (defaults merged)."""
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    content = {"DEFAULT": dict(parser.defaults())}
    for section in parser.sections():
        content[section] = {key: parser.get(section, key, raw=True) for key in parser.options(section)}
    return content


def logging_differences(text: str) -> list[tuple[str, str]]:
    """``(where, value)`` for every setting in which ``text`` differs from `STANDARD_LOGGING_CONF`.

    Compared after parsing, so comments, blank lines and line endings do not count; a file that
    does not parse is one difference. ``where`` is ``[section] option``; ``value`` the received
    value, or ``<missing>`` when the standard has the option and ``text`` does not.
    """
    try:
        received = _ini_content(text)
    except configparser.Error as e:
        return [("<file>", f"cannot parse: {' '.join(str(e).split())}")]
    standard = _ini_content(STANDARD_LOGGING_CONF)
    differences = []
    for section in sorted(set(received) | set(standard)):
        have, want = received.get(section, {}), standard.get(section, {})
        for key in sorted(set(have) | set(want)):
            if have.get(key) != want.get(key):
                differences.append((f"[{section}] {key}", have.get(key, "<missing>")))
    return differences


def config_targets(bundle_dirs: Iterable[str | Path]) -> set[str]:
    """Every string ``_target_`` in ``<bundle>/configs/*.json`` of ``bundle_dirs``, as the dotted
    path MONAI instantiates (`monai_target_path`); ``$``/``@``/``%`` values are left out."""
    found: set[str] = set()
    stack: list = []
    for bundle in bundle_dirs:
        stack += [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(bundle).glob("configs/*.json"))]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and not target.startswith(("$", "@", "%")):
                found.add(monai_target_path(target))
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    return found
