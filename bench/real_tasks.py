#!/usr/bin/python3
"""Real-image segmentation tasks (evaluation only, never training) from Debian 12 package data,
each split into 16 supports and 8 queries; bench/real_tasks.sh fetches the packages and scores.

Sources (extracted with `apt-get download PKG; dpkg-deb -x PKG.deb PKGS/PKG`):
  mricron-data 1.2.20211006+dfsg-4  /usr/share/mricron/templates/{ch2,ch2bet,aal}.nii.gz
      ch2    = Colin27 single-subject T1 MRI (181x217x181, 1 mm, RAS)
      ch2bet = the same volume brain-extracted (identical voxels inside the brain)
      aal    = AAL atlas (116 regions) drawn on this same Colin27 brain, same grid
  insighttoolkit5-examples 5.2.1-5+deb12u1  examples/Data/KmeansTest_T1UCharRaw.nii.gz and
      KmeansTest_T1RawSkullStrip.nii.gz (a different subject's T1 and its skull-strip/brain label)

Output: OUT/TASK/{support,queries}/images/NAME.png (8-bit grey, min-max scaled to 0..255 per
volume, inside the crop) and .../labels/NAME.png (8-bit, 0 = background, 1.. = structures).
Supports are 16 slices spread evenly over the task's slices, queries 8 of the slices halfway
between two supports (the farthest from them: neighbouring slices of one volume look alike).
Each slice is cropped to one square box per task (the brain's bounding box, padded with
zeros) so the tool's resize to 128x128 does not distort it. Slices whose label has fewer
than MIN_PIXELS foreground pixels are skipped. Needs python3-numpy, python3-pil, python3-nibabel.
"""
import json
import os
import shutil
import sys

import nibabel as nib
import numpy as np
from PIL import Image

if len(sys.argv) != 3:
    sys.exit("usage: real_tasks.py PKGS OUT")
PKGS, OUT = sys.argv[1], sys.argv[2]
MIN_PIXELS = 25
MRI = PKGS + "/mricron-data/usr/share/mricron/templates/"
ITK = PKGS + "/insighttoolkit5-examples/usr/share/doc/insighttoolkit5-examples/examples/Data/"


def load_ras(path):
    img = nib.as_closest_canonical(nib.load(path))  # reorient to RAS+ (axis0=R, 1=A, 2=S)
    return np.asanyarray(img.dataobj), img.header.get_zooms()[:3]


def square_box(mask2d, margin=4):
    """Square (r0, r1, c0, c1) around the True pixels of mask2d, possibly outside bounds."""
    rows = np.where(mask2d.any(1))[0]
    cols = np.where(mask2d.any(0))[0]
    r0, r1, c0, c1 = rows[0] - margin, rows[-1] + 1 + margin, cols[0] - margin, cols[-1] + 1 + margin
    side = max(r1 - r0, c1 - c0)
    rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
    return rc - side // 2, rc - side // 2 + side, cc - side // 2, cc - side // 2 + side


def crop(a, box):
    r0, r1, c0, c1 = box
    out = np.zeros((r1 - r0, c1 - c0), a.dtype)
    sr0, sr1, sc0, sc1 = max(r0, 0), min(r1, a.shape[0]), max(c0, 0), min(c1, a.shape[1])
    out[sr0 - r0:sr1 - r0, sc0 - c0:sc1 - c0] = a[sr0:sr1, sc0:sc1]
    return out


def slices(vol, plane):
    """Yield (index, 2D slice shown radiologically-upright) of a RAS volume."""
    if plane == "axial":      # rows: anterior at top, cols: R..L axis as stored
        for k in range(vol.shape[2]):
            yield k, vol[:, :, k].T[::-1, :]
    elif plane == "coronal":  # rows: superior at top
        for k in range(vol.shape[1]):
            yield k, vol[:, k, :].T[::-1, :]
    elif plane == "sagittal":  # rows: superior at top, cols: posterior..anterior
        for k in range(vol.shape[0]):
            yield k, vol[k, :, :].T[::-1, :]
    else:
        raise ValueError(plane)


def split(count):
    """Indices of the supports and the queries among `count` slices."""
    sup = [round(i * (count - 1) / 15) for i in range(16)]
    mids = sorted({(sup[i] + sup[i + 1]) // 2 for i in range(15)} - set(sup))
    return sup, mids[::max(1, len(mids) // 8)][:8]


def make_task(name, image, label, head, plane, meaning, source, spacing):
    """image: intensity volume; label: uint8 label volume; head: mask that defines the crop."""
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    proj = np.zeros_like(next(slices(head, plane))[1], bool)
    for _, s in slices(head, plane):
        proj |= s > 0
    box = square_box(proj)
    image = image.astype(np.float64)
    lo, hi = float(image.min()), float(image.max())
    kept = []
    for (k, im), (_, lab) in zip(slices(image, plane), slices(label, plane)):
        if np.count_nonzero(lab) >= MIN_PIXELS:
            kept.append((f"{name}_{plane[:3]}{k:03d}", im, lab))
    sup, qry = split(len(kept))
    for part, idx in (("support", sup), ("queries", qry)):
        os.makedirs(f"{d}/{part}/images")
        os.makedirs(f"{d}/{part}/labels")
        for i in idx:
            n, im, lab = kept[i]
            im8 = np.round((crop(im, box) - lo) / (hi - lo) * 255).clip(0, 255).astype(np.uint8)
            Image.fromarray(im8, "L").save(f"{d}/{part}/images/{n}.png")
            Image.fromarray(crop(lab, box).astype(np.uint8), "L").save(f"{d}/{part}/labels/{n}.png")
    side = int(box[1] - box[0])
    info = dict(task=name, plane=plane, slices=len(kept), size=[side, side],
                voxel_mm=[float(x) for x in spacing], labels=meaning, source=source, min_pixels=MIN_PIXELS,
                support=[kept[i][0] for i in sup], queries=[kept[i][0] for i in qry])
    with open(d + "/task.json", "w") as f:
        json.dump(info, f, indent=1)
    print(f"{name}: {len(kept)} slices {side}x{side}, {len(sup)} supports, {len(qry)} queries, labels {sorted(meaning)}")


def main():
    ch2, sp = load_ras(MRI + "ch2.nii.gz")
    bet, _ = load_ras(MRI + "ch2bet.nii.gz")
    aal, _ = load_ras(MRI + "aal.nii.gz")
    assert ch2.shape == bet.shape == aal.shape
    head = ch2 > 0
    brainbox = bet > 0  # crop box for the structure tasks: the brain, not the whole head
    src = "mricron-data: ch2.nii.gz (Colin27 T1) + "
    brain = (bet > 0).astype(np.uint8)

    make_task("ch2_brainmask_axial", ch2, brain, head, "axial",
              {"1": "brain (ch2bet.nii.gz > 0; skull-stripped Colin27)"},
              src + "ch2bet.nii.gz", sp)

    hip = np.isin(aal, [37, 38]).astype(np.uint8)
    make_task("ch2_hippocampus_coronal", ch2, hip, brainbox, "coronal",
              {"1": "hippocampus, left+right (AAL 37 Hippocampus_L, 38 Hippocampus_R)"},
              src + "aal.nii.gz", sp)

    cb = np.isin(aal, list(range(91, 117))).astype(np.uint8)
    make_task("ch2_cerebellum_axial", ch2, cb, brainbox, "axial",
              {"1": "cerebellum: hemispheres + vermis (AAL 91-116)"},
              src + "aal.nii.gz", sp)

    make_task("ch2_cerebellum_sagittal", ch2, cb, brainbox, "sagittal",
              {"1": "cerebellum: hemispheres + vermis (AAL 91-116)"},
              src + "aal.nii.gz", sp)

    dg = np.zeros_like(aal, np.uint8)
    for v, ids in ((1, (71, 72)), (2, (73, 74)), (3, (75, 76)), (4, (77, 78))):
        dg[np.isin(aal, ids)] = v
    make_task("ch2_deepgrey_axial", ch2, dg, brainbox, "axial",
              {"1": "caudate L+R (AAL 71,72)", "2": "putamen L+R (AAL 73,74)",
               "3": "pallidum L+R (AAL 75,76)", "4": "thalamus L+R (AAL 77,78)"},
              src + "aal.nii.gz", sp)

    t1, sp2 = load_ras(ITK + "KmeansTest_T1UCharRaw.nii.gz")
    ss, _ = load_ras(ITK + "KmeansTest_T1RawSkullStrip.nii.gz")
    assert t1.shape == ss.shape
    make_task("itk_t1_brainmask_coronal", t1, (ss > 0).astype(np.uint8), t1 > 0, "coronal",
              {"1": "brain (KmeansTest_T1RawSkullStrip.nii.gz > 0; values 4,5,6 inside it merged)"},
              "insighttoolkit5-examples: KmeansTest_T1UCharRaw.nii.gz + KmeansTest_T1RawSkullStrip.nii.gz",
              sp2)


if __name__ == "__main__":
    main()
