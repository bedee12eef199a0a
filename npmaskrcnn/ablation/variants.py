"""What the ablation compares: the variants of each table, the data each table is trained
on, what each table tests, the metrics it reports, and the paper's numbers.

A variant differs from the others of its table only in the RoI operation (Table 2c:
RoIPool, RoIWarp max/avg, RoIAlign max/avg, plus RoIAlign ``aligned=True``; Table 2d:
stride 16 and stride 32; FPN; Table 6: RoIPool vs RoIAlign in Keypoint R-CNN) or only in
the mask loss (Table 2b). The "C4" and "C5"
variants are *single-level* models: the shapes preset's backbone cut at C4 (stride 16) or
C5 (stride 32), pooled from that one map with the FPN model's box and mask heads. The
paper's R50-C4 has a res5 head after the RoI pooling instead; its numbers stand beside ours
only for the direction and the shape of the differences, never as comparable values.

Each variant names its data (``plan.DATA``): ``small`` (Table 2c, aligned, FPN), ``large``
(Table 2d), ``compete`` (Table 2b) or ``figures`` (Table 6: stick-figure persons with
COCO's 17 keypoints); a run is a variant on its data, so equal settings on other data are
other runs. A variant on keypoint data (``KEYPOINT_DATA``) is the ``figures`` preset's
Keypoint R-CNN (the FPN model with the keypoint branch and no mask branch), so its table
reports keypoint AP (COCO's OKS) where the others report mask AP (:func:`metrics`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

BOX_METRICS = (("bbox", "AP"), ("bbox", "AP50"), ("bbox", "AP75"))
METRICS = (("segm", "AP"), ("segm", "AP50"), ("segm", "AP75")) + BOX_METRICS  # mask tables
KEYPOINT_METRICS = (("keypoints", "AP"), ("keypoints", "AP50"), ("keypoints", "AP75")) + \
    BOX_METRICS
KEYPOINT_DATA = ("figures",)  # persons with keypoints: trained with the keypoint branch
TASK = {"segm": "mask", "keypoints": "keypoint", "bbox": "box"}  # a metric type in words
PAPER = "paper (COCO, R50)"


@dataclass(frozen=True)
class Variant:
    """One model setting; ``paper`` holds the paper's mask (or keypoint) (+ box) AP, AP50,
    AP75 in %."""

    name: str
    features: str  # "c4" (stride 16) | "c5" (stride 32) | "fpn"
    data: str = "small"  # "small" | "large" | "compete" | "figures": see plan.DATA
    pooler: str = "align"
    aggregation: str = "avg"
    aligned: bool = False
    mask_loss: str = "sigmoid"
    class_agnostic_mask: bool = False
    paper: tuple = ()

    @property
    def key(self) -> str:
        """The run folder, e.g. ``small/c4/align-avg``: equal settings on equal data share
        one run."""
        parts = [self.pooler, self.aggregation] + ["aligned"] * self.aligned
        parts += ["softmax"] * (self.mask_loss == "softmax")
        parts += ["agnostic"] * self.class_agnostic_mask
        return f"{self.data}/{self.features}/{'-'.join(parts)}"

    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("name", "paper")}


def _v(name, features, pooler="align", aggregation="avg", paper=(), **kw) -> Variant:
    return Variant(name, features, pooler=pooler, aggregation=aggregation, paper=paper, **kw)


POOL, ALIGN = "RoIPool", "RoIAlign"
C4_POOL, C4_ALIGN = (26.9, 48.8, 26.4), (30.3, 51.2, 31.5)  # Table 2c
TABLES = {  # paper numbers: Tables 2 and 6 of He et al. 2017 and the text of section 4.2
    "2c": ("Table 2c: the RoI operation at stride 16 (single-level C4, no res5 head)", [
        _v(POOL, "c4", "pool", "max", C4_POOL),
        _v("RoIWarp", "c4", "warp", "max", (27.2, 49.2, 27.1)),
        _v("RoIWarp", "c4", "warp", "avg", (27.1, 48.9, 27.1)),
        _v(ALIGN, "c4", "align", "max", (30.2, 51.0, 31.8)),
        _v(ALIGN, "c4", "align", "avg", C4_ALIGN)]),
    "aligned": ("RoIAlign aligned=False (the paper's) vs True (half-pixel shift), single-level "
                "C4", [
        _v(ALIGN, "c4", "align", "avg", C4_ALIGN),
        _v("RoIAlign aligned=True", "c4", "align", "avg", aligned=True)]),
    "2d": ("Table 2d: the RoI operation at stride 16 and at stride 32, on 256-px images "
           "(single-level C4 / C5, no res5 head)", [
        _v(f"{POOL}, stride 16", "c4", "pool", "max", C4_POOL, data="large"),
        _v(f"{ALIGN}, stride 16", "c4", "align", "avg", C4_ALIGN, data="large"),
        _v(f"{POOL}, stride 32", "c5", "pool", "max", (23.6, 46.5, 21.6, 28.2, 52.7, 26.9),
           data="large"),
        _v(f"{ALIGN}, stride 32", "c5", "align", "avg", (30.9, 51.8, 32.1, 34.0, 55.3, 36.4),
           data="large")]),
    "fpn": ("FPN, P2-P5 (section 4.2: RoIAlign +1.5 mask AP, +0.5 box AP)", [
        _v(POOL, "fpn", "pool", "max"), _v(ALIGN, "fpn", "align", "avg")]),
    "2b": ("Table 2b: mask loss at stride 16 (single-level C4, no res5 head, RoIAlign avg), "
           "on shapes whose classes compete", [
        _v("sigmoid, class-specific", "c4", paper=C4_ALIGN, data="compete"),
        _v("softmax, class-specific", "c4", mask_loss="softmax", paper=(24.8, 44.1, 25.1),
           data="compete"),
        _v("sigmoid, class-agnostic", "c4", class_agnostic_mask=True, paper=(29.7,),
           data="compete")]),
    "6": ("Table 6: RoIPool vs RoIAlign for keypoints (Keypoint R-CNN, FPN, stick figures)", [
        _v(POOL, "fpn", "pool", "max", (59.8, 86.2, 66.7), data="figures"),
        _v(ALIGN, "fpn", "align", "avg", (64.2, 86.6, 69.7), data="figures")]),
}

DESIGN = {  # what each table tests, printed beside it (fixed before any run of this design)
    "2c": "Five RoI ops, everything else equal, on the `small` data: small objects and 1-2 px "
          "strokes against a stride-16 grid, where RoIPool's rounding costs the most.",
    "aligned": "torchvision's half-pixel shift (not in the paper) against the paper's RoIAlign, "
               "on the `small` data.",
    "2d": "Both pairs (RoIPool vs RoIAlign at stride 16 and at stride 32) on the same `large` "
          "data (256-px images, an 8x8 C5 map, objects 24-160 px) and schedule, so that the "
          "two gains are paired by seed and their difference has an interval.",
    "fpn": "The FPN model on the `small` data, its RoIs spread over the levels by the level "
           "rule with the canonical size scaled with the anchors (56 px: P2 under 28 px, P3 "
           "to 56, P4 to 112, P5 above; with torchvision's 224 every RoI under 112 px went to "
           "P2).",
    "2b": "Both losses train on the same soft targets (the GT mask RoIAligned onto the RoI), "
          "on the `compete` data: six classes in three pairs that share an outline, and at "
          "least 30% of the objects over an object of another class.",
    "6": "The `figures` preset's Keypoint R-CNN (the FPN model of the shapes tables with a "
         "keypoint branch of 4 x conv 64 and no mask branch) on the `figures` data (stick-"
         "figure persons with COCO's 17 keypoints, the images seen at 1.5 times their size, "
         "as `npmaskrcnn train --data figures` sees them: 160 px at 240 px). The RoI op "
         "(RoIPool max vs RoIAlign avg) is that of every RoI branch, the box pooler and the "
         "keypoint pooler alike; everything else is equal. Scored by "
         "keypoint AP (COCO's OKS) and box AP.",
}


def metrics(table: str) -> tuple:
    """The ((iou type, stat), ...) a table reports: keypoint and box AP, AP50, AP75 for a
    table on keypoint data (Table 6), mask and box AP, AP50, AP75 for the others."""
    keypoints = any(v.data in KEYPOINT_DATA for v in TABLES[table][1])
    return KEYPOINT_METRICS if keypoints else METRICS


def union_metrics(tables) -> tuple:
    """The metrics of ``tables`` in order, each once (the columns of results.csv)."""
    return tuple(dict.fromkeys(m for t in tables for m in metrics(t)))


def contrasts(table: str, variants) -> list:
    """The paired differences (A, B) a table reports: each RoI op − the RoIPool of the same
    features, RoIAlign aligned=True − False; for 2b the paper's choice (sigmoid,
    class-specific) − the others."""
    if table == "2b":
        return [(variants[0], v) for v in variants[1:]]
    pool = {v.features: v for v in reversed(variants) if v.pooler == "pool"}  # the first
    pairs = [(v, pool[v.features]) for v in variants
             if v.features in pool and v is not pool[v.features]]
    plain = {v.features: v for v in variants if v.pooler == "align" and v.aggregation == "avg"
             and not v.aligned}
    pairs += [(v, plain[v.features]) for v in variants if v.aligned and v.features in plain]
    return pairs


def label(v: Variant) -> str:
    if v.aligned or v.pooler == "pool" or "," in v.name:
        return v.name
    return f"{v.name} ({v.aggregation})"
