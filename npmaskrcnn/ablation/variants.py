"""What the ablation compares: the variants of each table and the paper's numbers.

A variant differs from the others of its table only in the RoI operation (Table 2c:
RoIPool, RoIWarp max/avg, RoIAlign max/avg, plus RoIAlign ``aligned=True``; Table 2d:
stride 32; FPN) or only in the mask loss (Table 2b). The "C4" and "C5" variants are
*single-level* models: the shapes preset's backbone cut at C4 (stride 16) or C5
(stride 32), pooled from that one map with the FPN model's box and mask heads. The paper's
R50-C4 has a res5 head after the RoI pooling instead; its numbers stand beside ours only
for the direction and the shape of the differences, never as comparable values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

METRICS = (("segm", "AP"), ("segm", "AP50"), ("segm", "AP75"),
           ("bbox", "AP"), ("bbox", "AP50"), ("bbox", "AP75"))
PAPER = "paper (COCO, R50)"


@dataclass(frozen=True)
class Variant:
    """One model setting; ``paper`` holds the paper's mask (+ box) AP, AP50, AP75 in %."""

    name: str
    features: str  # "c4" (stride 16) | "c5" (stride 32) | "fpn"
    pooler: str = "align"
    aggregation: str = "avg"
    aligned: bool = False
    mask_loss: str = "sigmoid"
    class_agnostic_mask: bool = False
    paper: tuple = ()

    @property
    def key(self) -> str:
        """The run folder, e.g. ``c4/align-avg``: equal settings share one run."""
        parts = [self.pooler, self.aggregation] + ["aligned"] * self.aligned
        parts += ["softmax"] * (self.mask_loss == "softmax")
        parts += ["agnostic"] * self.class_agnostic_mask
        return f"{self.features}/{'-'.join(parts)}"

    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("name", "paper")}


def _v(name, features, pooler="align", aggregation="avg", paper=(), **kw) -> Variant:
    return Variant(name, features, pooler, aggregation, paper=paper, **kw)


POOL, ALIGN = "RoIPool", "RoIAlign"
TABLES = {  # paper numbers: Table 2 of He et al. 2017 and the text of section 4.2
    "2c": ("Table 2c: the RoI operation at stride 16 (single-level C4, no res5 head)", [
        _v(POOL, "c4", "pool", "max", (26.9, 48.8, 26.4)),
        _v("RoIWarp", "c4", "warp", "max", (27.2, 49.2, 27.1)),
        _v("RoIWarp", "c4", "warp", "avg", (27.1, 48.9, 27.1)),
        _v(ALIGN, "c4", "align", "max", (30.2, 51.0, 31.8)),
        _v(ALIGN, "c4", "align", "avg", (30.3, 51.2, 31.5))]),
    "aligned": ("RoIAlign aligned=False (the paper's) vs True (half-pixel shift), single-level "
                "C4", [
        _v(ALIGN, "c4", "align", "avg", (30.3, 51.2, 31.5)),
        _v("RoIAlign aligned=True", "c4", "align", "avg", aligned=True)]),
    "2d": ("Table 2d: the RoI operation at stride 32 (single-level C5, no res5 head)", [
        _v(POOL, "c5", "pool", "max", (23.6, 46.5, 21.6, 28.2, 52.7, 26.9)),
        _v(ALIGN, "c5", "align", "avg", (30.9, 51.8, 32.1, 34.0, 55.3, 36.4))]),
    "fpn": ("FPN (section 4.2: RoIAlign +1.5 mask AP, +0.5 box AP)", [
        _v(POOL, "fpn", "pool", "max"), _v(ALIGN, "fpn", "align", "avg")]),
    "2b": ("Table 2b: mask loss at stride 16 (single-level C4, RoIAlign avg)", [
        _v("sigmoid, class-specific", "c4", paper=(30.3, 51.2, 31.5)),
        _v("softmax, class-specific", "c4", mask_loss="softmax", paper=(24.8, 44.1, 25.1)),
        _v("sigmoid, class-agnostic", "c4", class_agnostic_mask=True, paper=(29.7,))]),
}


def contrasts(table: str, variants) -> list:
    """The paired differences (A, B) a table reports: each RoI op − RoIPool, RoIAlign
    aligned=True − False; for 2b the paper's choice (sigmoid, class-specific) − the others."""
    by_key = {v.key: v for v in variants}
    if table == "2b":
        return [(variants[0], v) for v in variants[1:]]
    pool = [v for v in variants if v.pooler == "pool"]
    pairs = [(v, pool[0]) for v in variants if pool and v is not pool[0]]
    plain = by_key.get(f"{variants[0].features}/align-avg")
    pairs += [(v, plain) for v in variants if v.aligned and plain is not None]
    return pairs


def label(v: Variant) -> str:
    if v.aligned or v.pooler == "pool" or "," in v.name:
        return v.name
    return f"{v.name} ({v.aggregation})"
