"""What a registration run leaves besides its volumes: quality figures as JSON and a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from matplotlib.figure import Figure

from mribundles.io.atomic import atomic_path
from mribundles.metrics.registration import jacobian_determinant, registration_report


def _stem(tensor) -> str:
    source = str(getattr(tensor, "meta", {}).get("filename_or_obj", "volume"))
    return Path(source).name.split(".")[0]


def pair_name(moving, fixed) -> str:
    """``<moving stem>_to_<fixed stem>``: the name every output of one registration starts with."""
    return f"{_stem(moving)}_to_{_stem(fixed)}"


class RegistrationReport:
    """For each registered pair, writes ``<moving>_to_<fixed>_registration.json`` (folding,
    log-Jacobian spread, and Dice/HD95 per class when both label maps were given) and
    ``<moving>_to_<fixed>_registration.png``, and puts the figures in ``engine.state.metrics``
    (mean over pairs, for MLflow) and ``engine.state.metric_details`` (per pair).

    Reads the engine's batch and postprocessed output on the registration grid (RAS, fixed
    grid): ``fixed_image``, ``moving_image`` (affinely aligned), ``moving_image_warped``, the
    field ``pred``, and optionally ``moving_label_warped`` and ``fixed_label``.
    """

    def __init__(self, output_dir: str, class_names: list[str], foreground: float = 0.01):
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.foreground = foreground
        self.reports: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.reports.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.on_pair)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.summarise)

    def on_pair(self, engine: Engine) -> None:
        for batch, output in zip(engine.state.batch, engine.state.output):
            out = {**batch, **output}
            fixed, ddf = out["fixed_image"], torch.as_tensor(out["pred"]).detach()
            report = registration_report(
                ddf,
                mask=torch.as_tensor(fixed)[0] > self.foreground,
                warped_label=out.get("moving_label_warped"),
                fixed_label=out.get("fixed_label"),
                class_names=self.class_names,
            )
            name = f"{pair_name(out['moving_image'], fixed)}_registration"
            with atomic_path(self.output_dir / f"{name}.json") as tmp:
                tmp.write_text(json.dumps(report, indent=2) + "\n")
            save_registration_png(self.output_dir / f"{name}.png", fixed, out["moving_image"], out["moving_image_warped"], ddf)
            self.reports.append(report)

    def summarise(self, engine: Engine) -> None:
        if not self.reports:
            return
        details = getattr(engine.state, "metric_details", None) or {}
        for key in self.reports[0]:
            values = [r[key] for r in self.reports]
            engine.state.metrics[key] = float(np.mean(values))
            details[key] = values
        engine.state.metric_details = details


def save_registration_png(path: Path, fixed, moving, warped, ddf: torch.Tensor) -> None:
    """Axial and coronal planes through the centre: fixed, moving after the affine step, moving
    after the deformable step, the warped image's edges over the fixed, and det J."""
    f, m, w = (torch.as_tensor(t).detach().float().cpu()[0].numpy() for t in (fixed, moving, warped))
    jac = jacobian_determinant(ddf[None].double().cpu())[0].numpy()
    inside = np.argwhere(f > 0.01)
    cx, cy, cz = inside.mean(0).round().astype(int) if len(inside) else np.array(f.shape) // 2
    columns = [("fixed", f, "gray"), ("moving, affine", m, "gray"), ("moving, deformed", w, "gray"), ("|deformed - fixed|", np.abs(w - f), "magma"), ("det J", jac, "RdBu_r")]
    fig = Figure(figsize=(3.2 * len(columns), 6.6))  # not pyplot's: no backend to choose, no figure to close
    axes = fig.subplots(2, len(columns))
    for row, cut in enumerate((lambda v: v[:, :, cz], lambda v: v[:, cy, :])):
        for ax, (title, vol, cmap) in zip(axes[row], columns):
            limits = {"vmin": 0.0, "vmax": 2.0} if title == "det J" else {"vmin": 0.0, "vmax": 1.0}
            ax.imshow(cut(vol).T, cmap=cmap, origin="lower", **limits)
            ax.set_title(title if row == 0 else "")
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
