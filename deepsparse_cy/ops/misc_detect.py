"""Detection operators: NonMaxSuppression and RoiAlign (numpy references).

ImageDecoder is not implemented: decoding JPEG (and WebP/JPEG2000) needs a real codec, which
numpy alone does not provide.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ShapeError
from .registry import register


def _scalar(x, default):
    if x is None or np.asarray(x).size == 0:
        return default
    return np.asarray(x).reshape(-1)[0]


def _corners(boxes, center_point_box):
    """(N, 4) boxes -> y1, x1, y2, x2 with y1 <= y2 and x1 <= x2."""
    b = boxes.astype(np.float64)
    if center_point_box:
        xc, yc, w, h = b[:, 0], b[:, 1], b[:, 2] / 2, b[:, 3] / 2
        return yc - h, xc - w, yc + h, xc + w
    y1, x1, y2, x2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)


def _iou_matrix(boxes, center_point_box):
    y1, x1, y2, x2 = _corners(boxes, center_point_box)
    area = (y2 - y1) * (x2 - x1)
    iy = np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None])
    ix = np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None])
    inter = np.where((iy > 0) & (ix > 0), iy * ix, 0.0)
    union = area[:, None] + area[None] - inter
    ok = (inter > 0) & (area[:, None] > 0) & (area[None] > 0) & (union > 0)
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


@register("NonMaxSuppression", since=10, data_dependent_shape=True)
def NonMaxSuppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                      score_threshold=None, *, center_point_box=0):
    """-> (num_selected, 3) int64 rows [batch, class, box]; per class in descending score order."""
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3:
        raise ShapeError(f"NonMaxSuppression: boxes (B, N, 4) and scores (B, C, N) expected, got "
                         f"{boxes.shape}, {scores.shape}")
    max_out = int(max(_scalar(max_output_boxes_per_class, 0), 0))
    iou_thr = float(_scalar(iou_threshold, 0.0))
    has_score_thr = score_threshold is not None and np.asarray(score_threshold).size > 0
    score_thr = float(_scalar(score_threshold, 0.0))
    out = []
    if max_out == 0:
        return np.empty((0, 3), np.int64)
    for b in range(boxes.shape[0]):
        iou = None
        for c in range(scores.shape[1]):
            s = scores[b, c]
            cand = np.nonzero(s > score_thr)[0] if has_score_thr else np.arange(s.shape[0])
            if cand.size == 0:
                continue
            # highest score first; ties keep the lower box index first
            cand = cand[np.argsort(-s[cand], kind="stable")]
            if iou is None:
                iou = _iou_matrix(boxes[b], center_point_box)   # shared by every class
            suppressed = np.zeros(boxes.shape[1], bool)
            picked = 0
            for i in cand:                # greedy: each pick suppresses its overlaps at once
                if suppressed[i]:
                    continue
                out.append((b, c, i))
                picked += 1
                if picked >= max_out:
                    break
                suppressed |= iou[i] > iou_thr
    if not out:
        return np.empty((0, 3), np.int64)
    return np.array(out, dtype=np.int64)


def _axis_samples(start, bin_size, pooled, grid, size):
    """Sample coordinates along one axis and their bilinear low/high indices and weights.

    Returns arrays of shape (pooled, grid): valid, low, high, w_low, w_high."""
    p = np.arange(pooled)[:, None]
    g = np.arange(grid)[None, :]
    v = start + p * bin_size + (g + 0.5) * bin_size / grid
    valid = (v >= -1.0) & (v <= size)
    v = np.maximum(v, 0.0)
    low = np.floor(v).astype(np.int64)
    clamp = low >= size - 1
    low = np.where(clamp, size - 1, low)
    high = np.where(clamp, size - 1, low + 1)
    v = np.where(clamp, low.astype(np.float64), v)
    frac = v - low
    return valid, low, high, 1.0 - frac, frac


def _roi_align(X, rois, batch_indices, half_pixel, mode, output_height, output_width,
               sampling_ratio, spatial_scale):
    if X.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4:
        raise ShapeError(f"RoiAlign: X (N, C, H, W) and rois (R, 4) expected, got {X.shape}, {rois.shape}")
    if mode not in ("avg", "max"):
        raise InputError(f"RoiAlign: unknown mode {mode!r}")
    R = rois.shape[0]
    _, C, H, W = X.shape
    PH, PW = int(output_height), int(output_width)
    Y = np.zeros((R, C, PH, PW), dtype=X.dtype)
    off = 0.5 if half_pixel else 0.0
    xf = X.astype(np.float64)
    bidx = np.asarray(batch_indices).astype(np.int64).reshape(-1)
    for r in range(R):                    # per ROI; all samples and channels are vectorised
        x0, y0, x1, y1 = (rois[r].astype(np.float64) * spatial_scale) - off
        rw, rh = x1 - x0, y1 - y0
        if not half_pixel:                # legacy mode forces malformed ROIs to 1x1
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / PH, rw / PW
        gh = int(sampling_ratio) if sampling_ratio > 0 else int(np.ceil(rh / PH))
        gw = int(sampling_ratio) if sampling_ratio > 0 else int(np.ceil(rw / PW))
        vy, yl, yh, wyl, wyh = _axis_samples(y0, bh, PH, gh, H)
        vx, xl, xh, wxl, wxh = _axis_samples(x0, bw, PW, gw, W)
        img = xf[bidx[r]]                                       # (C, H, W)
        # broadcast to (C, PH, gh, PW, gw)
        Yl, Yh = yl[:, :, None, None], yh[:, :, None, None]
        Xl, Xh = xl[None, None], xh[None, None]
        valid = (vy[:, :, None, None] & vx[None, None]).astype(np.float64)
        ay, by = wyl[:, :, None, None], wyh[:, :, None, None]
        ax, bx = wxl[None, None], wxh[None, None]
        t1 = (ay * ax * valid) * img[:, Yl, Xl]
        t2 = (ay * bx * valid) * img[:, Yl, Xh]
        t3 = (by * ax * valid) * img[:, Yh, Xl]
        t4 = (by * bx * valid) * img[:, Yh, Xh]
        if mode == "avg":
            Y[r] = (t1 + t2 + t3 + t4).sum(axis=(2, 4)) / max(gh * gw, 1)
        else:
            # max of the weighted corner terms, as onnxruntime defines RoiAlign's max mode
            m = np.maximum(np.maximum(t1, t2), np.maximum(t3, t4))
            Y[r] = m.max(axis=(2, 4)) if gh * gw > 0 else 0
    return Y


@register("RoiAlign", since=10)
def RoiAlign_10(X, rois, batch_indices, *, mode="avg", output_height=1, output_width=1,
                sampling_ratio=0, spatial_scale=1.0):
    return _roi_align(X, rois, batch_indices, False, mode, output_height, output_width,
                      sampling_ratio, spatial_scale)


@register("RoiAlign", since=16)
def RoiAlign_16(X, rois, batch_indices, *, coordinate_transformation_mode="half_pixel", mode="avg",
                output_height=1, output_width=1, sampling_ratio=0, spatial_scale=1.0):
    if coordinate_transformation_mode not in ("half_pixel", "output_half_pixel"):
        raise InputError(f"RoiAlign: unknown coordinate_transformation_mode {coordinate_transformation_mode!r}")
    return _roi_align(X, rois, batch_indices, coordinate_transformation_mode == "half_pixel", mode,
                      output_height, output_width, sampling_ratio, spatial_scale)
