"""Plots of partitions, densities and posteriors; each function takes and returns an ``ax``.

matplotlib is imported lazily, inside the functions.
"""

from __future__ import annotations

import numpy as np

from .partition import Partition

__all__ = ["plot_partition", "region_polygon"]


def _new_ax(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 5))
    return ax


def region_polygon(part: Partition, r: int, far: float) -> np.ndarray:
    """(k, 2) drawable polygon of a 2-D region, rays extended to length ``far``.

    Only for drawing: unbounded regions are cut off far outside the view.
    """
    G = part.generators[part.gen_ptr[r] : part.gen_ptr[r + 1]]
    if len(G) == 0:
        return np.array([[-far, -far], [far, -far], [far, far], [-far, far]])
    fin = np.nonzero(G[:, 2] != 0)[0]
    if len(fin) == 0:
        return np.array([[-far, -far], [far, -far], [far, far], [-far, far]])
    n = len(G)
    pts = []
    for k in range(n):
        if G[k, 2] != 0:
            pts.append(G[k, :2])
            continue
        prev_k = (k - 1) % n
        next_k = (k + 1) % n
        prev_pt = G[fin[fin < k][-1] if np.any(fin < k) else fin[-1], :2]
        next_pt = G[fin[fin > k][0] if np.any(fin > k) else fin[0], :2]
        if G[prev_k, 2] != 0:
            pts.append(prev_pt + far * G[k, :2])
        if G[next_k, 2] != 0:
            pts.append(next_pt + far * G[k, :2])
        if G[prev_k, 2] == 0 and G[next_k, 2] == 0:
            pts.append(prev_pt + far * G[k, :2])
    return np.array(pts)


def plot_partition(
    part: Partition,
    ax=None,
    *,
    lim: float = 4.0,
    outputs: int = 3,
    cmap: str = "tab20",
    edgecolor: str = "k",
    linewidth: float = 0.3,
):
    """Draw the linear regions of a partition (d = 1 or 2).

    Parameters
    ----------
    part : Partition
    ax : matplotlib Axes, optional
    lim : float
        The view is ``[-lim, lim]`` (per latent axis); regions are not clipped in the data.
    outputs : int
        (d = 1) number of output coordinates of ``g`` drawn against ``z``.

    Returns
    -------
    ax
    """
    ax = _new_ax(ax)
    d = part.latent_dim
    if d == 1:
        z = np.linspace(-lim, lim, 2001)[:, None]
        g = part.decoder(z)
        for j in range(min(outputs, g.shape[1])):
            ax.plot(z[:, 0], g[:, j], lw=1, label=f"g_{j}(z)")
        bps = part.facet_offsets[part.facet_normals[:, 0] > 0]
        bps = bps[np.abs(bps) <= lim]
        for t in bps:
            ax.axvline(t, color="0.7", lw=0.5, zorder=0)
        ax.set_xlim(-lim, lim)
        ax.set_xlabel("z")
        ax.set_title(f"{len(part)} regions (breakpoints in grey)")
        ax.legend(loc="best", fontsize="small")
        return ax
    if d != 2:
        raise ValueError(f"plot_partition draws latent_dim 1 or 2, got {d}")
    from matplotlib.collections import PolyCollection

    far = 20.0 * lim
    polys = [region_polygon(part, r, far) for r in range(len(part))]
    colors = np.arange(len(part)) % 20
    coll = PolyCollection(
        polys, array=colors, cmap=cmap, edgecolors=edgecolor, linewidths=linewidth
    )
    ax.add_collection(coll)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(f"{len(part)} linear regions")
    return ax
