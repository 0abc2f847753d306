"""Meply-like synthetic pelvic CT, so that every step of the project runs without the real data.

Each case is a contrast-CT volume (HU, int16) centred on the rectum:

- body with subcutaneous fat (about -100 HU), muscle (40-60 HU), pelvic bones (cortex > 700 HU,
  marrow about 250 HU), bladder (water), pelvic fat;
- the rectum with an enhancing wall and a lumen of gas and faeces, inside the mesorectal fat with
  its fascia;
- distractors of node-like shape or HU: iliac arteries and veins, small mesorectal vessels seen in
  cross-section (partial volume brings them to 60-120 HU), ureters and bowel loops;
- metastatic lymph nodes (labelled): 3-15 mm, irregular, heterogeneous (necrotic centre in some),
  40-70 HU, most in the mesorectum, some on the pelvic side wall beside the iliac vessels;
- benign small nodes (not labelled): 2-6 mm, smooth, 20-45 HU, some with a fatty hilum.

Then a point-spread blur and correlated noise of 12-18 HU. The same seed gives the same bytes.
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
from scipy import ndimage

from cosam_nn.cli_types import positive, probability
from cosam_nn.data import meply_layout
from cosam_nn.data.splits import split_cases

DEFAULT_SHAPE = {"prln": (48, 160, 160), "slabs": (15, 512, 512)}
DEFAULT_SPACING = {"prln": (1.25, 0.7, 0.7), "slabs": (0.625, 0.625, 0.625)}


class _Canvas:
    """The volume being painted, with its millimetre grid (z, y, x) centred on the rectum."""

    def __init__(self, shape, spacing, rng):
        self.shape, self.spacing, self.rng = tuple(shape), np.asarray(spacing, float), rng
        zc, yc, xc = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
        self.z = zc[:, None, None]
        self.y = yc[None, :, None]
        self.x = xc[None, None, :]
        self.img = np.full(shape, -1000.0, dtype=np.float32)

    def path(self, c0, amplitude, wavelength=80.0, slope=0.0):
        """A centre coordinate per slice, (Z, 1, 1): c0 + slow sinusoidal drift + slope * z."""
        phase = self.rng.uniform(0, 2 * np.pi)
        return c0 + amplitude * np.sin(2 * np.pi * self.z / wavelength + phase) + slope * self.z

    def ellipse(self, cy, cx, ry, rx):
        """Boolean (Z, Y, X) mask of an elliptic column; centres and radii may vary per slice."""
        inside = ((self.y - cy) / ry) ** 2 + ((self.x - cx) / rx) ** 2 <= 1.0
        return np.broadcast_to(inside, self.shape)

    def paint(self, mask, hu, texture=0.0):
        values = hu + (texture * self.rng.standard_normal(int(mask.sum())) if texture else 0.0)
        self.img[mask] = values


def _body(cv):
    rng = cv.rng
    cy, ry, rx = rng.uniform(-35, -25), rng.uniform(110, 125), rng.uniform(155, 175)
    cv.paint(cv.ellipse(cy, 0, ry, rx), -100, texture=8)
    cv.paint(cv.ellipse(cy, 0, ry - 14, rx - 18), 50, texture=6)
    cv.paint(cv.ellipse(cy, 0, ry - 28, rx - 36), -95, texture=8)
    for side in (-1, 1):  # femoral heads, ischium, obturator internus
        _bone(cv, cv.ellipse(rng.uniform(-20, -10), side * rng.uniform(90, 100), 24, 24))
        _bone(cv, cv.ellipse(rng.uniform(10, 20), side * rng.uniform(72, 78), 20, 9))
        cv.paint(cv.ellipse(5, side * 61, 30, 6), rng.uniform(40, 60), texture=6)
        cv.paint(cv.ellipse(58, side * 48, 11, 28), rng.uniform(40, 60), texture=6)
    _bone(cv, cv.ellipse(cv.path(44, 3, slope=0.15), 0, 11, 42))  # sacrum
    bladder = cv.ellipse(rng.uniform(-60, -50), 0, rng.uniform(22, 30), rng.uniform(32, 42))
    cv.paint(bladder, 40, texture=5)
    cv.paint(ndimage.binary_erosion(bladder, iterations=max(1, round(3 / cv.spacing[1]))), 8, texture=4)


def _bone(cv, mask):
    cv.paint(mask, 800, texture=60)
    cv.paint(ndimage.binary_erosion(mask, iterations=max(1, round(2.5 / cv.spacing[1]))), 260, texture=40)


def _rectum(cv):
    """Mesorectum, fascia and rectum; returns what node placement needs to know."""
    rng = cv.rng
    cy, cx = cv.path(0, 4, 90), cv.path(0, 5, 110)
    my, mx = rng.uniform(26, 34), rng.uniform(32, 40)
    cv.paint(cv.ellipse(cy, cx, my + 1.2, mx + 1.2), 25, texture=5)  # mesorectal fascia
    cv.paint(cv.ellipse(cy, cx, my, mx), -105, texture=10)
    radius = cv.path(rng.uniform(13, 17), 2.5, 60)
    cv.paint(cv.ellipse(cy, cx, radius, radius), 42, texture=6)  # muscular wall
    cv.paint(cv.ellipse(cy, cx, radius - 3.0, radius - 3.0), 75, texture=8)  # enhancing mucosa
    lumen = cv.ellipse(cy, cx, radius - 4.0, radius - 4.0)
    cv.paint(lumen, rng.uniform(-80, 20), texture=60)  # faeces
    gas_level = cy + (radius - 4.0) * rng.uniform(-0.6, 0.4)
    cv.paint(lumen & (cv.y < gas_level), -950, texture=20)  # gas rises anteriorly
    return {"cy": cy, "cx": cx, "my": my, "mx": mx, "radius": radius}


def _tube(cv, cy, cx, radius, hu, texture=8.0, wall=None):
    mask = cv.ellipse(cy, cx, radius, radius)
    if wall is None:
        cv.paint(mask, hu, texture)
    else:
        wall_hu, wall_mm = wall
        cv.paint(mask, wall_hu, texture=6)
        cv.paint(cv.ellipse(cy, cx, radius - wall_mm, radius - wall_mm), hu, texture)


def _distractors(cv, rect):
    """Vessels, ureters and bowel loops; returns the side-wall vessel centres for lateral nodes."""
    rng = cv.rng
    side_wall = []
    for side in (-1, 1):
        vy, vx = cv.path(rng.uniform(15, 25), 4), cv.path(side * rng.uniform(44, 52), 3)
        _tube(cv, vy, vx, rng.uniform(3.0, 4.0), rng.uniform(170, 230))  # internal iliac artery
        _tube(cv, vy + 7, vx + side * 3, rng.uniform(4.0, 5.5), rng.uniform(120, 160))  # vein
        _tube(cv, cv.path(-32, 4), cv.path(side * 74, 3), rng.uniform(3.5, 4.5), rng.uniform(170, 230))
        _tube(cv, cv.path(-5, 5), cv.path(side * rng.uniform(36, 42), 4), rng.uniform(1.8, 2.8),
              rng.uniform(20, 40))  # ureter: node-like HU and size on every slice
        side_wall.append((vy, vx, side))
    for _ in range(rng.integers(3, 8)):  # small mesorectal vessels, node-like in cross-section
        angle, frac = rng.uniform(0, 2 * np.pi), rng.uniform(0.55, 0.85)
        vy = rect["cy"] + frac * rect["my"] * np.sin(angle) + cv.path(0, 3, 40)
        vx = rect["cx"] + frac * rect["mx"] * np.cos(angle) + cv.path(0, 3, 40, slope=rng.uniform(-0.2, 0.2))
        _tube(cv, vy, vx, rng.uniform(0.7, 1.8), rng.uniform(60, 120), texture=10)
    for _ in range(rng.integers(2, 5)):  # bowel loops in front of the mesorectum
        contents = rng.choice([15.0, -900.0, -60.0])
        by = cv.path(rng.uniform(-95, -45), 12, rng.uniform(40, 90))
        bx = cv.path(rng.choice([-1, 1]) * rng.uniform(25, 110), 15, rng.uniform(40, 90))
        _tube(cv, by, bx, rng.uniform(8, 13), contents, texture=30, wall=(45, 2.5))
    return side_wall


def _node_mask(cv, centre, diameter, irregularity):
    """Boolean mask of one node in a local box: a rotated ellipsoid with a perturbed margin.

    Returns (slices, mask, q) where q is the normalised radius (0 centre, 1 margin) in the box.
    """
    rng = cv.rng
    semi = diameter / 2 * rng.uniform(0.75, 1.2, 3)
    rot = _random_rotation(rng)
    half = np.ceil((semi.max() * 1.3) / cv.spacing).astype(int) + 1
    idx = np.round([(c / s) + (n - 1) / 2 for c, s, n in zip(centre, cv.spacing, cv.shape)]).astype(int)
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, cv.shape)
    if np.any(hi <= lo):
        return None
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    grid = np.stack(np.meshgrid(*[(np.arange(a, b) - (n - 1) / 2) * s - c
                                  for a, b, n, s, c in zip(lo, hi, cv.shape, cv.spacing, centre)],
                                indexing="ij"), axis=-1)
    local = grid @ rot.T
    q = np.sqrt(((local / semi) ** 2).sum(-1))
    if irregularity:
        field = ndimage.gaussian_filter(rng.standard_normal(q.shape), 1.5 / cv.spacing.min() ** 0.5)
        q = q + irregularity * field / (field.std() + 1e-6)
    return sl, _largest_component(q <= 1.0), q


def _largest_component(mask):
    """An irregular margin can shed islands; a node is one connected piece."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)


def _random_rotation(rng):
    a = rng.standard_normal((3, 3))
    qm, r = np.linalg.qr(a)
    return qm * np.sign(np.diag(r))


def _place_nodes(cv, rect, side_wall, occupied, metastatic, count=None):
    """Paint nodes (`count`, else a random number); metastatic ones also go into the returned list."""
    rng = cv.rng
    if count is None:
        count = rng.choice([0, 1, 2, 3, 4, 5, 6], p=[0.1, 0.2, 0.22, 0.2, 0.13, 0.1, 0.05]) if metastatic \
            else rng.integers(3, 10)
    nodes = []
    for _ in range(count * 20):
        if len(nodes) == count:
            break
        if metastatic:
            diameter = float(np.clip(rng.lognormal(np.log(6.5), 0.38), 3.0, 15.0))
        else:
            diameter = float(rng.uniform(2.0, 6.0))
        centre = _node_centre(cv, rect, side_wall, diameter, lateral=metastatic and rng.random() < 0.2)
        made = _node_mask(cv, centre, diameter, 0.25 if metastatic else 0.06)
        if made is None:
            continue
        sl, mask, q = made
        if not mask.any() or (occupied[sl] & mask).any():
            continue
        region = cv.img[sl]
        if metastatic:
            hu = rng.uniform(40, 70) + 8 * ndimage.gaussian_filter(rng.standard_normal(q.shape), 1.0) * 2
            if diameter > 8 and rng.random() < 0.3:
                hu = np.where(q < 0.5, rng.uniform(5, 25), hu)  # necrotic centre
        else:
            hu = rng.uniform(20, 45) + 4 * rng.standard_normal(q.shape)
            if diameter > 4 and rng.random() < 0.5:
                hu = np.where(q < 0.35, -60.0, hu)  # fatty hilum
        region[mask] = np.broadcast_to(hu, q.shape)[mask]
        occupied[sl] |= ndimage.binary_dilation(mask)
        nodes.append((sl, mask, diameter))
    return nodes


def _node_centre(cv, rect, side_wall, diameter, lateral):
    """A centre (z, y, x) in mm in the mesorectal fat, or on the pelvic side wall if lateral."""
    rng = cv.rng
    zi = rng.integers(0, cv.shape[0])
    z = (zi - (cv.shape[0] - 1) / 2) * cv.spacing[0]
    if lateral:
        vy, vx, side = side_wall[rng.integers(0, 2)]
        angle = rng.uniform(0, 2 * np.pi)
        dist = 7 + diameter / 2 + rng.uniform(0, 5)
        return z, float(vy[zi, 0, 0] + dist * np.sin(angle)), float(vx[zi, 0, 0] + dist * np.cos(angle))
    cy, cx, r = (float(rect[k][zi, 0, 0]) for k in ("cy", "cx", "radius"))
    angle = rng.uniform(0, 2 * np.pi)
    inner = r + 1.5 + diameter / 2
    outer_y, outer_x = rect["my"] - diameter / 2 - 0.5, rect["mx"] - diameter / 2 - 0.5
    outer = 1.0 / np.sqrt((np.sin(angle) / outer_y) ** 2 + (np.cos(angle) / outer_x) ** 2)
    dist = rng.uniform(inner, max(inner, outer))
    return z, cy + dist * np.sin(angle), cx + dist * np.cos(angle)


def make_case(shape, spacing, rng, node_free=False, with_benign=False):
    """One synthetic case; node_free: no metastatic node (benign nodes and distractors as usual).

    Returns img (Z, Y, X) int16 HU and instances (Z, Y, X) uint8: 0 background, 1..n one per
    metastatic node (benign nodes and distractors are 0); with_benign: also the benign nodes' instances
    (same form), which no label holds (bench/phantom_separability.py measures them). The image is the
    same either way.
    """
    cv = _Canvas(shape, spacing, rng)
    _body(cv)
    rect = _rectum(cv)
    side_wall = _distractors(cv, rect)
    occupied = np.zeros(shape, dtype=bool)
    metastatic = _place_nodes(cv, rect, side_wall, occupied, metastatic=True, count=0 if node_free else None)
    benign = _place_nodes(cv, rect, side_wall, occupied, metastatic=False)
    instances = _instances(shape, metastatic)
    img = ndimage.gaussian_filter(cv.img, sigma=(0.4, 0.6, 0.6))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.7)
    img += noise * (rng.uniform(12, 18) / (noise.std() + 1e-6))
    img = np.clip(np.round(img), -1024, 3071).astype(np.int16)
    return (img, instances, _instances(shape, benign)) if with_benign else (img, instances)


def _instances(shape, nodes):
    instances = np.zeros(shape, dtype=np.uint8)
    for label_id, (sl, mask, _) in enumerate(nodes, start=1):
        instances[sl][mask] = label_id
    return instances


def node_rows(case, instances):
    """prln_target.csv rows of one case: voxel count and box (exclusive ends) per node."""
    rows = []
    for label_id, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        volume = int((instances[box] == label_id).sum())
        (z1, z2), (y1, y2), (x1, x2) = [(s.start, s.stop) for s in box]
        rows.append(dict(case=case, label_id=label_id, volume=volume,
                         z1=z1, y1=y1, x1=x1, z2=z2, y2=y2, x2=x2))
    return rows


def case_name(index):
    return f"synth{index:04d}"


def node_free_test_cases(test, fraction, seed):
    """The test cases made node-free: round(fraction x len(test)) of them, a seeded choice."""
    n = int(round(fraction * len(test)))
    order = np.random.default_rng([seed, 2 ** 31]).permutation(len(test))  # no case draws this stream
    return {test[i] for i in order[:n]}


def case_draws(cases, seed, test_cases=None, test_node_free=0.0):
    """(name, in the test split, node-free, random generator) of each case `generate` draws, in order:
    the one place that ties a case to its split and its random stream."""
    names = [case_name(i) for i in range(cases)]
    _, test = split_cases(names, seed, test_cases)
    node_free = node_free_test_cases(test, test_node_free, seed)
    return [(name, name in test, name in node_free, np.random.default_rng([seed, i])) for i, name in enumerate(names)]


def generate(out, cases, seed, fmt="prln", shape=None, spacing=None, log=print, test_cases=None, test_node_free=0.0):
    """Write `cases` synthetic cases in layout `fmt` into the folder `out` (must not exist).

    test_cases: how many of them form the test split (default: the paper's fraction); test_node_free:
    the fraction of test cases given no metastatic node (on top of the cases that draw none), so that
    a benchmark's test set holds a known share of node-free scans."""
    shape = tuple(shape or DEFAULT_SHAPE[fmt])
    spacing = tuple(spacing or DEFAULT_SPACING[fmt])
    rows, splits = [], {k: [] for k in meply_layout.SPLIT_KEYS}
    for i, (name, in_test, node_free, rng) in enumerate(case_draws(cases, seed, test_cases, test_node_free)):
        img, instances = make_case(shape, spacing, rng, node_free=node_free)
        if fmt == "prln":
            meply_layout.write_prln_case(out, name, img, spacing, (instances > 0).astype(np.uint8))
        else:
            meply_layout.write_slab(os.path.join(out, name + ".npz"), img, (instances > 0).astype(np.uint8))
        case_rows = node_rows(name, instances)
        rows += case_rows
        kind = "both" if case_rows else "normal"
        splits[("test_" if in_test else "train_") + kind].append(name)
        log(f"[{i + 1}/{cases}] {name}: {len(case_rows)} metastatic node(s)")
    if fmt == "prln":
        meply_layout.write_prln_index(out, rows, splits)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_make_synthetic",
                                description="Write Meply-like synthetic pelvic CT in the authors' layouts.")
    p.add_argument("out", help="output folder (created; must not exist unless --overwrite)")
    p.add_argument("--cases", type=int, default=20, help="number of cases (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--format", choices=("prln", "slabs"), default="prln",
                   help="prln: the 3D layout (npz/, clean_labels/, PRLN/); slabs: 15-slice example files")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="volume shape (default prln 48 160 160, slabs 15 512 512)")
    p.add_argument("--spacing", type=positive, nargs=3, metavar=("Z", "Y", "X"),
                   help="voxel spacing in mm (default prln 1.25 0.7 0.7, slabs 0.625 0.625 0.625)")
    p.add_argument("--test-cases", type=int, default=None,
                   help="cases in the test split (default: the paper's 55 of 269, at least 1 of each split)")
    p.add_argument("--test-node-free", type=probability, default=0.0, metavar="FRACTION",
                   help="fraction of the test cases made free of metastatic nodes (default 0: as drawn)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    a = p.parse_args(argv)
    if a.cases < 1:
        p.error("--cases must be at least 1")
    if a.test_cases is not None and not 1 <= a.test_cases < a.cases:
        p.error("--test-cases must be at least 1 and fewer than --cases")
    if not 0.0 <= a.test_node_free <= 1.0:
        p.error("--test-node-free must be a fraction between 0 and 1")
    if a.shape and min(a.shape) < 4:
        p.error("--shape: every size must be at least 4")
    if a.spacing and min(a.spacing) <= 0:
        p.error("--spacing must be positive")
    if os.path.exists(a.out) and os.listdir(a.out) and not a.overwrite:
        p.error(f"{a.out} exists and is not empty (use --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".cosam_synth.", dir=parent)
    try:
        generate(tmp, a.cases, a.seed, a.format, a.shape, a.spacing, test_cases=a.test_cases,
                 test_node_free=a.test_node_free)
        if os.path.exists(a.out):
            shutil.rmtree(a.out)
        os.chmod(tmp, 0o755)
        os.replace(tmp, a.out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    print(f"wrote {a.cases} case(s) to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
