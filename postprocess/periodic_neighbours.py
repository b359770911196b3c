"""Neighbour searches in a periodic square box with numpy only (cell lists).

postprocess/ uses numpy, h5py and matplotlib only (no scipy): these replace cKDTree's
query_pairs, query_ball_point counts and k-nearest queries, and connected components.
"""
import numpy as np


def pairs_within(x, L, rc):
    """All pairs i < j of points x (N, 2) in the periodic box [0, L)^2 with minimum-image
    distance < rc, as an (M, 2) int array, and their distances (M,)."""
    x = np.mod(np.asarray(x, float), L)
    n = x.shape[0]
    nc = max(1, int(L // rc))
    if nc < 3:  # too few cells for a 3 x 3 stencil without double counting: all pairs
        i, j = np.triu_indices(n, 1)
        d = x[i] - x[j]
        d -= L * np.rint(d / L)
        r = np.sqrt((d * d).sum(1))
        m = r < rc
        return np.stack([i[m], j[m]], 1), r[m]
    cs = L / nc
    c = np.minimum((x // cs).astype(np.int64), nc - 1)
    cell = c[:, 0] * nc + c[:, 1]
    order = np.argsort(cell, kind="stable")
    start = np.searchsorted(cell[order], np.arange(nc * nc + 1))
    out_i, out_j, out_r = [], [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            nb = ((c[:, 0] + dx) % nc) * nc + (c[:, 1] + dy) % nc  # neighbour cell of each point
            cnt = start[nb + 1] - start[nb]
            i = np.repeat(np.arange(n), cnt)
            off = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            j = order[np.repeat(start[nb], cnt) + off]
            keep = i < j
            i, j = i[keep], j[keep]
            d = x[i] - x[j]
            d -= L * np.rint(d / L)
            r = np.sqrt((d * d).sum(1))
            m = r < rc
            out_i.append(i[m]), out_j.append(j[m]), out_r.append(r[m])
    i, j, r = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_r)
    return np.stack([i, j], 1), r


def count_within(x, L, rc):
    """Number of other points within rc of each point (N,)."""
    p, _ = pairs_within(x, L, rc)
    n = len(x)
    return np.bincount(p[:, 0], minlength=n) + np.bincount(p[:, 1], minlength=n)


def _brute(xs, y, L):
    """Minimum-image distances (len(xs), len(y)) in row chunks."""
    out = np.empty((len(xs), len(y)))
    for c0 in range(0, len(xs), 256):
        d = xs[c0 : c0 + 256, None, :] - y[None, :, :]
        d -= L * np.rint(d / L)
        out[c0 : c0 + 256] = np.sqrt((d * d).sum(-1))
    return out


def knn(x, L, k):
    """Indices (N, k) of the k nearest other points of each point, nearest first, and their
    distances (N, k): a cell-list search within the radius holding ~2k points at the mean
    density, and a direct search over all points for the points with fewer than k there."""
    x = np.mod(np.asarray(x, float), L)
    n = len(x)
    if k >= n:
        raise ValueError(f"knn: k = {k} needs more than k points (N = {n})")
    rc = min(np.sqrt(2.0 * k * L * L / (np.pi * n)), L / 2)
    p, r = pairs_within(x, L, rc)
    src = np.concatenate([p[:, 0], p[:, 1]])
    dst = np.concatenate([p[:, 1], p[:, 0]])
    rr = np.concatenate([r, r])
    cnt = np.bincount(src, minlength=n)
    o = np.lexsort((rr, src))
    src, dst, rr = src[o], dst[o], rr[o]
    first = np.searchsorted(src, np.arange(n))
    idx = first[:, None] + np.minimum(np.arange(k)[None, :], np.maximum(cnt[:, None] - 1, 0))
    nb, dist = dst[idx], rr[idx]
    few = np.flatnonzero(cnt < k)
    if len(few):
        d = _brute(x[few], x, L)
        d[np.arange(len(few)), few] = np.inf
        o = np.argsort(d, axis=1, kind="stable")[:, :k]
        nb[few], dist[few] = o, np.take_along_axis(d, o, 1)
    return nb, dist


def nearest_other(x, y, L):
    """Distance from each point of x (N, 2) to the nearest point of y (M, 2), periodic: a
    cell-list search within the radius holding ~4 points of y at its mean density, and a direct
    search for the points of x with none there."""
    x, y = np.mod(np.asarray(x, float), L), np.mod(np.asarray(y, float), L)
    n = len(x)
    rc = min(np.sqrt(4.0 * L * L / (np.pi * max(len(y), 1))), L / 2)
    p, r = pairs_within(np.concatenate([x, y]), L, rc)
    a, b = p[:, 0], p[:, 1]
    out = np.full(n, np.inf)
    m1 = (a < n) & (b >= n)
    m2 = (b < n) & (a >= n)
    np.minimum.at(out, a[m1], r[m1])
    np.minimum.at(out, b[m2], r[m2])
    far = np.flatnonzero(~np.isfinite(out))
    if len(far):
        out[far] = _brute(x[far], y, L).min(1)
    return out


def components(n, pairs):
    """Connected-component labels (N,) of the graph on n nodes with edges pairs (M, 2):
    label propagation with pointer jumping until no label changes."""
    lab = np.arange(n)
    if len(pairs) == 0:
        return lab
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        m = np.minimum(lab[a], lab[b])
        new = lab.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]  # pointer jumping
        while True:
            nn = new[new]
            if np.array_equal(nn, new):
                break
            new = nn
        if np.array_equal(new, lab):
            return lab
        lab = new
