"""Classical-ML operators of domain ai.onnx.ml (numpy references).

LabelEncoder, TreeEnsemble (opset 5), TreeEnsembleRegressor / TreeEnsembleClassifier,
ArrayFeatureExtractor, Binarizer, Normalizer, Scaler, OneHotEncoder, Imputer, FeatureVectorizer,
ZipMap. Trees are evaluated for all samples and all trees at once: one vectorised step per tree
level instead of a Python walk per sample.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ShapeError
from .registry import Op, register

ML = "ai.onnx.ml"


# --- LabelEncoder -------------------------------------------------------------------------------

def _lookup(x, keys, values, default, out_dtype):
    """Map each element of x through keys -> values (default where absent), vectorised."""
    x = np.asarray(x)
    if x.dtype == object or np.asarray(keys).dtype == object or np.asarray(keys).dtype.kind in "US":
        table = dict(zip([str(k) for k in keys], values))
        flat = [table.get(str(v), default) for v in x.reshape(-1)]
        out = np.empty(len(flat), dtype=out_dtype)
        out[:] = flat
        return out.reshape(x.shape)
    keys = np.asarray(keys)
    values = np.asarray(values, dtype=out_dtype) if out_dtype != object else np.asarray(values, dtype=object)
    order = np.argsort(keys, kind="stable")
    sk, sv = keys[order], values[order]
    pos = np.clip(np.searchsorted(sk, x), 0, max(len(sk) - 1, 0))
    if len(sk):
        hit = sk[pos] == x
        out = np.where(hit, sv[pos], default) if out_dtype != object else np.where(hit, sv[pos], default)
    else:
        hit = np.zeros(x.shape, bool)
        out = np.full(x.shape, default, dtype=out_dtype)
    if keys.dtype.kind == "f":
        nan_keys = np.isnan(sk)
        if nan_keys.any():                            # NaN keys match NaN inputs
            out = np.where(np.isnan(x), sv[np.nonzero(nan_keys)[0][0]], out)
    return np.asarray(out, dtype=out_dtype)


@register("LabelEncoder", since=1, domain=ML)
def LabelEncoder_1(X, *, classes_strings=(), default_int64=-1, default_string="_Unused"):
    classes = list(classes_strings)
    if X.dtype == object or X.dtype.kind in "US":          # string -> index
        return _lookup(X, classes, np.arange(len(classes), dtype=np.int64), default_int64, np.int64)
    return _lookup(X, np.arange(len(classes), dtype=np.int64), classes, default_string, object)


@register("LabelEncoder", since=2, domain=ML)
def LabelEncoder(X, *, default_float=-0.0, default_int64=-1, default_string="_Unused",
                 default_tensor=None, keys_floats=None, keys_int64s=None, keys_strings=None,
                 keys_tensor=None, values_floats=None, values_int64s=None, values_strings=None,
                 values_tensor=None):
    if keys_tensor is not None:
        keys = keys_tensor.reshape(-1)
        if keys.dtype.kind in "US":
            keys = keys.astype(object)
    else:
        keys = next((k for k in (keys_floats, keys_int64s, keys_strings) if k is not None), None)
        if keys is None:
            raise InputError("LabelEncoder: no keys attribute")
        if keys is keys_floats:
            keys = np.asarray(keys, np.float32)
        elif keys is keys_int64s:
            keys = np.asarray(keys, np.int64)
        else:
            keys = np.asarray(keys, dtype=object)
    if values_tensor is not None:
        vals = values_tensor.reshape(-1)
        if default_tensor is not None:
            default = np.asarray(default_tensor).reshape(-1)[0]
        elif vals.dtype == object or vals.dtype.kind in "US":
            default = "_Unused"
        elif vals.dtype.kind == "f":
            default = -0.0
        else:
            default = -1
        out_dtype = np.dtype(object) if vals.dtype.kind in "USO" else vals.dtype
    elif values_floats is not None:
        vals, default, out_dtype = np.asarray(values_floats, np.float32), default_float, np.dtype(np.float32)
    elif values_int64s is not None:
        vals, default, out_dtype = np.asarray(values_int64s, np.int64), default_int64, np.dtype(np.int64)
    elif values_strings is not None:
        vals, default, out_dtype = np.asarray(values_strings, dtype=object), default_string, np.dtype(object)
    else:
        raise InputError("LabelEncoder: no values attribute")
    if len(keys) != len(vals):
        raise InputError("LabelEncoder: keys and values differ in length")
    x = X
    if x.dtype.kind in "US":
        x = x.astype(object)
    return _lookup(x, keys, vals, default, out_dtype)


# --- tree ensembles -----------------------------------------------------------------------------

_MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4,
          "BRANCH_NEQ": 5, "BRANCH_MEMBER": 6}


class _Forest:
    """Flat node arrays; a child pointer >= 0 is a node, < 0 is leaf ~ptr (i.e. -leaf - 1)."""

    def __init__(self, feature, split, mode, true_ptr, false_ptr, missing_true, roots, members=None):
        self.feature = np.asarray(feature, np.int64)
        self.split = np.asarray(split, np.float64)
        self.mode = np.asarray(mode, np.int64)
        self.true_ptr = np.asarray(true_ptr, np.int64)
        self.false_ptr = np.asarray(false_ptr, np.int64)
        self.missing_true = np.asarray(missing_true, bool)
        self.roots = np.asarray(roots, np.int64)
        self.members = members or {}           # node index -> sorted array of set members

    def leaves(self, X):
        """(N, n_trees) leaf index reached by every sample in every tree."""
        X = np.asarray(X, np.float64)
        if X.ndim == 1:
            X = X[None]
        N = X.shape[0]
        cur = np.broadcast_to(self.roots, (N, len(self.roots))).copy()
        rows = np.broadcast_to(np.arange(N)[:, None], cur.shape)
        for _ in range(len(self.feature) + 1):          # bounded by the node count
            act = cur >= 0
            if not act.any():
                break
            nid = cur[act]
            v = X[rows[act], self.feature[nid]]
            s = self.split[nid]
            m = self.mode[nid]
            cond = np.select([m == 0, m == 1, m == 2, m == 3, m == 4, m == 5],
                             [v <= s, v < s, v >= s, v > s, v == s, v != s], default=False)
            if self.members:
                for node, mem in self.members.items():
                    sel = nid == node
                    if sel.any():
                        cond[sel] = np.isin(v[sel], mem)
            cond |= self.missing_true[nid] & np.isnan(v)
            cur[act] = np.where(cond, self.true_ptr[nid], self.false_ptr[nid])
        if (cur >= 0).any():
            raise InputError("tree ensemble has a cycle or unterminated branch")
        return ~cur


def _post_transform(scores, pt):
    if pt in ("NONE", 0, None):
        return scores
    if pt in ("SOFTMAX", 1):
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if pt in ("LOGISTIC", 2):
        return 1.0 / (1.0 + np.exp(-scores))
    if pt in ("SOFTMAX_ZERO", 3):
        # softmax over the non-zero entries; zeros stay zero
        nz = scores != 0
        mx = np.where(nz, scores, -np.inf).max(axis=1, keepdims=True)
        mx = np.where(np.isfinite(mx), mx, 0)
        e = np.where(nz, np.exp(scores - mx), 0)
        s = e.sum(axis=1, keepdims=True)
        return e / np.where(s == 0, 1, s)
    if pt in ("PROBIT", 4):
        return np.sqrt(2.0) * _erfinv(2 * scores - 1)
    raise InputError(f"unknown post_transform {pt!r}")


def _erfinv(y):
    """Inverse error function (Giles' single-precision approximation, as onnxruntime uses)."""
    y = np.asarray(y, np.float64)
    w = -np.log((1.0 - y) * (1.0 + y))
    small = w < 5.0
    ws = w - 2.5
    p1 = 2.81022636e-08
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
              -0.00417768164, 0.246640727, 1.50140941):
        p1 = c + p1 * ws
    wl = np.sqrt(np.maximum(w, 5.0)) - 3.0
    p2 = -0.000200214257
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
              0.00943887047, 1.00167406, 2.83297682):
        p2 = c + p2 * wl
    return np.where(small, p1, p2) * y


def _aggregate(leaf_w, has, agg, n_trees):
    """leaf_w: (N, T, n_targets) per-tree contributions; has: mask of real contributions."""
    if agg in ("SUM", 1):
        return leaf_w.sum(axis=1)
    if agg in ("AVERAGE", 0):
        return leaf_w.sum(axis=1) / n_trees
    if agg in ("MIN", 2):
        r = np.where(has, leaf_w, np.inf).min(axis=1)
        return r
    if agg in ("MAX", 3):
        return np.where(has, leaf_w, -np.inf).max(axis=1)
    raise InputError(f"unknown aggregate_function {agg!r}")


@register("TreeEnsemble", since=5, domain=ML)
class TreeEnsemble(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        modes = np.asarray(a["nodes_modes"]).astype(np.int64).reshape(-1)
        n = len(modes)
        tl = np.asarray(a["nodes_trueleafs"], np.int64)
        fl = np.asarray(a["nodes_falseleafs"], np.int64)
        tn = np.asarray(a["nodes_truenodeids"], np.int64)
        fn = np.asarray(a["nodes_falsenodeids"], np.int64)
        true_ptr = np.where(tl != 0, ~tn, tn)
        false_ptr = np.where(fl != 0, ~fn, fn)
        missing = a.get("nodes_missing_value_tracks_true")
        missing = np.zeros(n, bool) if missing is None else np.asarray(missing, bool)
        members = {}
        mv = a.get("membership_values")
        if mv is not None:
            it = iter(np.asarray(mv, np.float64).reshape(-1).tolist())
            for i in np.nonzero(modes == 6)[0]:            # NaN-separated sets, in node order
                s = []
                for v in it:
                    if np.isnan(v):
                        break
                    s.append(v)
                members[int(i)] = np.array(s)
        elif (modes == 6).any():
            raise InputError("TreeEnsemble: BRANCH_MEMBER nodes need membership_values")
        roots = np.asarray(a["tree_roots"], np.int64)
        # a root whose both children are the same leaf is a one-leaf tree: the leaf is the root id
        deg = (tl[roots] != 0) & (fl[roots] != 0) & (tn[roots] == fn[roots])
        root_ptr = np.where(deg, ~roots, roots)
        splits = np.asarray(a["nodes_splits"]).reshape(-1)
        self.forest = _Forest(a["nodes_featureids"], splits.astype(np.float64), modes, true_ptr,
                              false_ptr, missing, root_ptr, members)
        self.leaf_targets = np.asarray(a["leaf_targetids"], np.int64)
        self.leaf_weights = np.asarray(a["leaf_weights"]).reshape(-1).astype(np.float64)
        self.n_targets = int(a["n_targets"])
        self.agg = a.get("aggregate_function", 1)
        self.post = a.get("post_transform", 0)

    def run(self, inputs, outs):
        X = inputs[0]
        leaves = self.forest.leaves(X)                                 # (N, T)
        N, T = leaves.shape
        contrib = np.zeros((N, T, self.n_targets))
        has = np.zeros((N, T, self.n_targets), bool)
        tid = self.leaf_targets[leaves]
        contrib[np.arange(N)[:, None], np.arange(T)[None], tid] = self.leaf_weights[leaves]
        has[np.arange(N)[:, None], np.arange(T)[None], tid] = True
        agg = self.agg
        if agg in (2, 3):
            r = _aggregate(contrib, has, agg, T)
            fill = np.finfo(X.dtype).max if agg == 2 else np.finfo(X.dtype).min
            r = np.where(np.isfinite(r), r, fill)
        else:
            r = _aggregate(contrib, has, agg, T)
        return [_post_transform(r, self.post).astype(X.dtype)]


def _legacy_forest(a, prefix):
    """Build a _Forest plus per-leaf weight tables from the v1/v3 (treeids, nodeids) attributes."""
    tree = np.asarray(a["nodes_treeids"], np.int64)
    nid = np.asarray(a["nodes_nodeids"], np.int64)
    modes_s = list(a["nodes_modes"])
    n = len(tree)
    index = {(int(t), int(k)): i for i, (t, k) in enumerate(zip(tree, nid))}
    is_leaf = np.array([m == "LEAF" for m in modes_s])
    leaf_of = -np.ones(n, np.int64)
    leaf_of[is_leaf] = np.arange(is_leaf.sum())
    mode = np.array([_MODES.get(m, -1) if m != "LEAF" else -1 for m in modes_s], np.int64)
    if ((mode < 0) & ~is_leaf).any():
        raise InputError(f"unsupported tree node mode in {set(modes_s)}")
    if a.get("nodes_values_as_tensor") is not None:
        split = np.asarray(a["nodes_values_as_tensor"], np.float64).reshape(-1)
    else:
        split = np.asarray(a.get("nodes_values") or [0.0] * n, np.float64)
    tids = np.asarray(a.get("nodes_truenodeids") or [0] * n, np.int64)
    fids = np.asarray(a.get("nodes_falsenodeids") or [0] * n, np.int64)

    def ptr(t, k):
        j = index[(int(t), int(k))]
        return ~leaf_of[j] if is_leaf[j] else j

    true_ptr = np.array([ptr(t, k) if not is_leaf[i] else 0 for i, (t, k) in enumerate(zip(tree, tids))], np.int64)
    false_ptr = np.array([ptr(t, k) if not is_leaf[i] else 0 for i, (t, k) in enumerate(zip(tree, fids))], np.int64)
    missing = a.get("nodes_missing_value_tracks_true")
    missing = np.zeros(n, bool) if not missing else np.asarray(missing, bool)
    trees = sorted(set(int(t) for t in tree))
    roots = []
    for t in trees:                                   # root = the tree's node nobody points to
        members = [i for i in range(n) if tree[i] == t]
        pointed = {int(true_ptr[i]) for i in members if not is_leaf[i]} | \
                  {int(false_ptr[i]) for i in members if not is_leaf[i]}
        root = next(i for i in members if (int(~leaf_of[i]) if is_leaf[i] else i) not in pointed)
        roots.append(~leaf_of[root] if is_leaf[root] else root)
    forest = _Forest(a["nodes_featureids"], split, np.where(mode < 0, 0, mode), true_ptr, false_ptr,
                     missing, roots)
    # leaf weight table: (n_leaves, n_out) plus presence mask
    t_tree = np.asarray(a[prefix + "_treeids"], np.int64)
    t_node = np.asarray(a[prefix + "_nodeids"], np.int64)
    t_id = np.asarray(a[prefix + "_ids"], np.int64)
    if a.get(prefix + "_weights_as_tensor") is not None:
        t_w = np.asarray(a[prefix + "_weights_as_tensor"], np.float64).reshape(-1)
    else:
        t_w = np.asarray(a[prefix + "_weights"], np.float64)
    return forest, len(trees), (t_tree, t_node, t_id, t_w), index, leaf_of


def _leaf_table(n_leaves, n_out, entries, index, leaf_of):
    t_tree, t_node, t_id, t_w = entries
    W = np.zeros((n_leaves, n_out), np.float32)   # float32 sums, as onnxruntime does
    has = np.zeros((n_leaves, n_out), bool)
    for t, k, i, w in zip(t_tree, t_node, t_id, t_w):
        leaf = leaf_of[index[(int(t), int(k))]]
        W[leaf, i] += w
        has[leaf, i] = True
    return W, has


def _base(a):
    if a.get("base_values_as_tensor") is not None:
        return np.asarray(a["base_values_as_tensor"], np.float64).reshape(-1)
    b = a.get("base_values")
    return None if not b else np.asarray(b, np.float64)


@register("TreeEnsembleRegressor", since=1, domain=ML)
class TreeEnsembleRegressor(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.forest, self.n_trees, entries, index, leaf_of = _legacy_forest(a, "target")
        self.n_targets = int(a.get("n_targets", 1))
        self.W, self.has = _leaf_table(int((leaf_of >= 0).sum()), self.n_targets, entries, index, leaf_of)
        self.agg = a.get("aggregate_function", "SUM")
        self.post = a.get("post_transform", "NONE")
        self.base = _base(a)

    def run(self, inputs, outs):
        X = inputs[0]
        leaves = self.forest.leaves(X)
        has = self.has[leaves]
        r = _aggregate(self.W[leaves], has, self.agg, self.n_trees)
        scored = has.any(axis=1)
        if self.base is not None:
            r = r + self.base.astype(r.dtype)
        # as onnxruntime does: a target no leaf contributed to is 0, without the base value
        r = np.where(scored, r, 0)
        return [_post_transform(r, self.post).astype(np.float32)]


@register("TreeEnsembleClassifier", since=1, domain=ML)
class TreeEnsembleClassifier(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.forest, self.n_trees, entries, index, leaf_of = _legacy_forest(a, "class")
        labels = a.get("classlabels_int64s") or a.get("classlabels_strings")
        if not labels:
            raise InputError("TreeEnsembleClassifier needs classlabels_int64s or classlabels_strings")
        self.labels = np.asarray(labels, dtype=np.int64 if a.get("classlabels_int64s") else object)
        nc = len(self.labels)
        self.W, self.has = _leaf_table(int((leaf_of >= 0).sum()), nc, entries, index, leaf_of)
        used = np.unique(entries[2])
        # onnxruntime's binary case: two labels but weights only for one class id
        self.binary = nc == 2 and len(used) == 1
        self.all_positive = bool((entries[3] >= 0).all())
        self.post = a.get("post_transform", "NONE")
        self.base = _base(a)
        self.agg = a.get("aggregate_function", "SUM")

    def run(self, inputs, outs):
        X = inputs[0]
        leaves = self.forest.leaves(X)
        s = _aggregate(self.W[leaves], self.has[leaves], self.agg, self.n_trees)
        s = np.where(np.isfinite(s), s, 0)
        if self.base is not None:
            s = s + self.base.astype(s.dtype)
        if self.binary:
            # onnxruntime's binary case: one score column decides the label by a threshold
            # (0.5 when all weights are positive, else 0); the other class's score stays 0
            pos = s[:, 1] if self.has[:, 1].any() else s[:, 0]
            label = np.where(pos > (0.5 if self.all_positive else 0), 1, 0)
            s = np.stack([np.zeros_like(pos), pos], axis=1)
        else:
            label = np.argmax(s, axis=1)
        probs = _post_transform(s, self.post)
        return [self.labels[label], probs.astype(np.float32)]


# --- small transforms ---------------------------------------------------------------------------

@register("ArrayFeatureExtractor", since=1, domain=ML)
def ArrayFeatureExtractor(X, Y):
    idx = np.asarray(Y, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= X.shape[-1]):
        raise InputError(f"ArrayFeatureExtractor: index out of range for last dim {X.shape[-1]}")
    r = np.take(X, idx, axis=-1)
    if X.ndim == 1:
        return r.reshape(1, -1)
    return r


@register("Binarizer", since=1, domain=ML)
def Binarizer(X, *, threshold=0.0):
    return (X > threshold).astype(X.dtype)


@register("Normalizer", since=1, domain=ML)
def Normalizer(X, *, norm="MAX"):
    x = np.asarray(X, np.float64 if X.dtype == np.float64 else np.float32)
    if x.ndim == 1:
        x = x[None]
    if norm == "MAX":
        # onnxruntime divides by the signed row maximum (onnx's reference uses max |x|)
        d = x.max(axis=1, keepdims=True)
    elif norm == "L1":
        d = np.abs(x).sum(axis=1, keepdims=True)
    elif norm == "L2":
        d = np.sqrt((x * x).sum(axis=1, keepdims=True))
    else:
        raise InputError(f"Normalizer: unknown norm {norm!r}")
    if norm == "MAX":
        return (x / d).astype(np.float32)
    return (x / np.maximum(d, 1e-30)).astype(np.float32)


@register("Scaler", since=1, domain=ML)
def Scaler(X, *, offset=(0.0,), scale=(1.0,)):
    off = np.asarray(offset, np.float32)
    sc = np.asarray(scale, np.float32)
    return ((X.astype(np.float32) - off) * sc).astype(np.float32)


@register("OneHotEncoder", since=1, domain=ML)
def OneHotEncoder(X, *, cats_int64s=None, cats_strings=None, zeros=1):
    if cats_int64s:
        cats = np.asarray(cats_int64s, np.int64)
        x = np.asarray(X).astype(np.int64)
        eq = x[..., None] == cats
    elif cats_strings:
        table = {c: i for i, c in enumerate(cats_strings)}
        ids = np.array([table.get(str(v), -1) for v in np.asarray(X).reshape(-1)]).reshape(X.shape)
        eq = ids[..., None] == np.arange(len(cats_strings))
    else:
        raise InputError("OneHotEncoder: no categories")
    if not zeros and not eq.any(axis=-1).all():
        raise InputError("OneHotEncoder: input value not among the categories (zeros=0)")
    return eq.astype(np.float32)


@register("Imputer", since=1, domain=ML)
def Imputer(X, *, imputed_value_floats=None, imputed_value_int64s=None,
            replaced_value_float=0.0, replaced_value_int64=0):
    if imputed_value_floats:
        vals, rep = np.asarray(imputed_value_floats, X.dtype), replaced_value_float
    elif imputed_value_int64s:
        vals, rep = np.asarray(imputed_value_int64s, X.dtype), replaced_value_int64
    else:
        raise InputError("Imputer: no imputed values")
    x = X if X.ndim == 2 else X.reshape(X.shape[0], -1) if X.ndim > 1 else X[None]
    if vals.size not in (1, x.shape[1]):
        raise ShapeError(f"Imputer: {vals.size} imputed values for {x.shape[1]} features")
    miss = np.isnan(x) if (X.dtype.kind == "f" and np.isnan(rep)) else (x == rep)
    out = np.where(miss, np.broadcast_to(vals, x.shape), x)
    return out.reshape(X.shape).astype(X.dtype)


@register("FeatureVectorizer", since=1, domain=ML)
def FeatureVectorizer(*xs, inputdimensions=()):
    """Concatenate inputs column-wise, each cut or zero-padded to its declared width."""
    cols = []
    n = xs[0].shape[0] if xs[0].ndim > 1 else 1
    for x, d in zip(xs, inputdimensions):
        x = np.asarray(x, np.float32).reshape(n, -1)
        if x.shape[1] >= d:
            cols.append(x[:, :d])
        else:
            cols.append(np.pad(x, ((0, 0), (0, d - x.shape[1]))))
    return np.concatenate(cols, axis=1)


@register("ZipMap", since=1, domain=ML, seq_output=True)
def ZipMap(X, *, classlabels_int64s=None, classlabels_strings=None):
    """(N, C) scores -> list of N dicts label -> score (an ONNX sequence of maps)."""
    labels = classlabels_int64s if classlabels_int64s else classlabels_strings
    if not labels:
        raise InputError("ZipMap: no class labels")
    x = np.asarray(X, np.float32).reshape(-1, len(labels))
    return [dict(zip(labels, row.tolist())) for row in x]
