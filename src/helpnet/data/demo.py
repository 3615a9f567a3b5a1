"""Synthetic short-axis cine cardiac MR volumes with dense labels and scribbles.

The generator replaces ACDC when no real data is at hand: the workflow, the tests and a
first run need data that looks and is encoded like ACDC, is small and can be regenerated from a
seed. Each subject has an end-diastolic (ED) and an end-systolic (ES) frame:

- geometry: a random heart centre, orientation and size. The LV blood pool is an ellipse
  whose radius shrinks from base (slice 0) to apex like a half ellipsoid. The myocardium is a
  ring around it, and the RV is a crescent attached to the LV on one side. The RV ends before
  the apex, and the last slices may show only myocardium. ES has a smaller LV and RV cavity,
  and its myocardium is thicker because the wall keeps its area on every slice;
- appearance: a body ellipse with a bright subcutaneous fat rim, dark lungs, the descending
  aorta, the spine and soft tissue blobs, blurred by a point-spread function, multiplied by a
  smooth bias field, with Rician noise;
- geometry of the grid: in-plane spacing 1.3-1.8 mm, slice spacing 5-10 mm, 96-128 voxels per
  in-plane axis (not necessarily square) and 6-12 slices;
- labels as ACDC: 0 background, 1 RV, 2 Myo, 3 LV;
- scribbles as the ACDC scribbles of Valvano et al.: 1-voxel-wide strokes, an arc along the
  myocardium, a short line in the LV and along the RV, a background arc around the heart, on
  most slices, with 4 for unannotated voxels. Every stroke voxel carries the class of the dense
  label at that voxel.

The output directory has the ``nifti_folder`` layout: ``images/{case}.nii.gz`` (float32),
``scribbles/{case}.nii.gz`` (uint8) and ``labels/{case}.nii.gz`` (uint8), case ids
``subject01_ED``, ``subject01_ES``, ... and a ``demo.json`` with the generator settings. The
NIfTI affine is ``diag(spacing)`` and the header zooms are the spacing.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from helpnet.io import make_header, save_nifti, write_json

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
"""Bumped whenever the same seed starts to produce different volumes."""

CLASSES = ("RV", "Myo", "LV")
BACKGROUND, RV, MYO, LV = 0, 1, 2, 3
UNANNOTATED = 4
"""Scribble value of voxels that no stroke covers (as in the ACDC scribbles)."""
FRAMES = ("ED", "ES")

IN_PLANE_SPACING_MM = (1.3, 1.8)
SLICE_SPACING_MM = (5.0, 10.0)
IN_PLANE_SIZE = (96, 128)
SLICE_COUNT = (6, 12)

MARKER_FILE = "demo.json"
"""Written into every generated dataset; an existing directory with it may be replaced."""

# Relative signal levels of a bSSFP cine image (blood bright, myocardium and muscle dark).
_INTENSITY = {
    "tissue": 0.42,
    "fat": 0.85,
    "lung": 0.05,
    "mediastinum": 0.55,
    "myocardium": 0.28,
    "blood": 1.0,
    "spine": 0.18,
}


@dataclass
class DemoCase:
    """One synthetic frame in the on-disk encoding of the ``nifti_folder`` layout."""

    case_id: str
    subject: str
    frame: str
    image: np.ndarray
    """float32 (X, Y, Z), slices along axis 2, base at slice 0."""
    label: np.ndarray
    """uint8 dense label: 0 background, 1 RV, 2 Myo, 3 LV."""
    scribble: np.ndarray
    """uint8 scribble: 0 background, 1 RV, 2 Myo, 3 LV, 4 unannotated."""
    spacing: tuple[float, float, float]
    """Voxel size in mm (x, y, slice)."""
    parameters: dict = field(default_factory=dict)
    """Sampled anatomy of the subject, stored in demo.json."""


@dataclass
class _Anatomy:
    """Random parameters of one subject; lengths in mm, angles in radians."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    scene_angle: float
    body_centre: np.ndarray
    body_axes: np.ndarray
    heart_offset: np.ndarray
    heart_drift: np.ndarray
    heart_angle: float
    heart_twist: float
    ellipticity: float
    shape_harmonics: np.ndarray
    lv_radius: float
    myo_thickness: float
    cavity_length: float
    epicardium_length: float
    papillary: np.ndarray
    systolic_scale: float
    rv_thickness: float
    rv_half_angle: float
    rv_length: float
    rv_systolic_scale: float
    rv_wall: float
    blobs: list[tuple[np.ndarray, np.ndarray, float]]
    bias_coefficients: np.ndarray
    intensity_scale: float
    noise_fraction: float

    def summary(self) -> dict:
        return {
            "shape": list(self.shape),
            "spacing_mm": [round(s, 4) for s in self.spacing],
            "lv_radius_ed_mm": round(self.lv_radius, 2),
            "myocardium_thickness_ed_mm": round(self.myo_thickness, 2),
            "es_to_ed_lv_radius": round(self.systolic_scale, 3),
            "rv_thickness_ed_mm": round(self.rv_thickness, 2),
            "lv_cavity_length_mm": round(self.cavity_length, 1),
            "rv_length_mm": round(self.rv_length, 1),
        }


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    in_plane = round(float(rng.uniform(*IN_PLANE_SPACING_MM)), 4)
    slice_spacing = round(float(rng.uniform(*SLICE_SPACING_MM)), 2)
    # Pick the field of view first so that the heart fits whatever the pixel size.
    field_of_view = rng.uniform(165.0, 215.0, size=2)
    nx, ny = (int(np.clip(round(f / in_plane), *IN_PLANE_SIZE)) for f in field_of_view)
    nz = int(rng.integers(SLICE_COUNT[0], SLICE_COUNT[1] + 1))
    fov = np.array([nx * in_plane, ny * in_plane])

    lv_radius = float(rng.uniform(19.0, 26.0))
    myo_thickness = float(rng.uniform(7.0, 10.0))
    stack_length = (nz - 1) * slice_spacing
    # Below 1 the LV cavity ends before the last slice, which then shows only myocardium.
    cavity_length = float(stack_length * rng.uniform(0.84, 1.04))
    # The myocardial cap reaches just past the last slice, so no slice is empty.
    epicardium_length = max(cavity_length + myo_thickness, stack_length + 0.3 * slice_spacing)
    rv_length = float(stack_length * rng.uniform(0.5, 0.82))

    blobs = []
    for _ in range(int(rng.integers(8, 16))):
        centre = np.array([rng.uniform(-0.9, 0.9), rng.uniform(-0.9, 0.9), rng.uniform(0.0, stack_length)])
        sigma = np.array([rng.uniform(4.0, 14.0), rng.uniform(4.0, 14.0), rng.uniform(6.0, 25.0)])
        gain = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.6))
        blobs.append((centre, sigma, gain))

    return _Anatomy(
        shape=(nx, ny, nz),
        spacing=(in_plane, in_plane, slice_spacing),
        scene_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        body_centre=fov / 2.0 + rng.uniform(-8.0, 8.0, size=2),
        body_axes=np.array([rng.uniform(0.5, 0.62), rng.uniform(0.4, 0.5)]) * fov.max(),
        heart_offset=np.array([rng.uniform(5.0, 20.0), rng.uniform(-18.0, -4.0)]),
        heart_drift=rng.uniform(-6.0, 6.0, size=2),
        heart_angle=float(np.deg2rad(150.0 + rng.uniform(-30.0, 30.0))),
        heart_twist=float(np.deg2rad(rng.uniform(-15.0, 15.0))),
        ellipticity=float(rng.uniform(0.85, 1.0)),
        shape_harmonics=rng.uniform(-0.035, 0.035, size=(2, 2)),
        lv_radius=lv_radius,
        myo_thickness=myo_thickness,
        cavity_length=cavity_length,
        epicardium_length=float(epicardium_length),
        papillary=rng.uniform(-np.pi, np.pi, size=2) + np.array([0.0, np.pi * 0.7]),
        systolic_scale=float(rng.uniform(0.6, 0.78)),
        rv_thickness=float(rng.uniform(15.0, 25.0)),
        rv_half_angle=float(np.deg2rad(rng.uniform(65.0, 90.0))),
        rv_length=rv_length,
        rv_systolic_scale=float(rng.uniform(0.55, 0.75)),
        rv_wall=float(rng.uniform(2.0, 3.5)),
        blobs=blobs,
        bias_coefficients=rng.normal(0.0, 0.12, size=6),
        intensity_scale=float(rng.uniform(200.0, 400.0)),
        noise_fraction=float(rng.uniform(0.025, 0.05)),
    )


# --- geometry of one slice ---------------------------------------------------------------------


@dataclass
class _SliceGeometry:
    """Heart frame and radii of one slice of one frame (mm)."""

    centre: np.ndarray
    angle: float
    cavity: float
    epicardium: float
    rv_thickness: float
    rv_half_angle: float


def _dome(position: float, length: float) -> float:
    """Relative radius of a half ellipsoid of the given length at ``position`` from its base."""
    if length <= 0 or position >= length:
        return 0.0
    return float(np.sqrt(1.0 - (position / length) ** 2))


def _slice_geometry(anatomy: _Anatomy, z: int, frame: str) -> _SliceGeometry:
    nz = anatomy.shape[2]
    position = z * anatomy.spacing[2]
    fraction = z / max(nz - 1, 1)

    cavity_ed = anatomy.lv_radius * _dome(position, anatomy.cavity_length)
    epicardium_ed = (anatomy.lv_radius + anatomy.myo_thickness) * _dome(position, anatomy.epicardium_length)
    rv_profile = _dome(position, anatomy.rv_length)
    if frame == "ED":
        cavity, epicardium = cavity_ed, epicardium_ed
        rv_thickness = anatomy.rv_thickness * rv_profile
    else:
        cavity = cavity_ed * anatomy.systolic_scale
        # The myocardium keeps its cross-sectional area, so it thickens when the cavity shrinks.
        epicardium = float(np.sqrt(cavity**2 + epicardium_ed**2 - cavity_ed**2))
        rv_thickness = anatomy.rv_thickness * anatomy.rv_systolic_scale * rv_profile

    centre = anatomy.body_centre + _rotate(anatomy.heart_offset + fraction * anatomy.heart_drift, anatomy.scene_angle)
    angle = anatomy.scene_angle + anatomy.heart_angle + fraction * anatomy.heart_twist
    return _SliceGeometry(
        centre=centre,
        angle=angle,
        cavity=cavity,
        epicardium=epicardium,
        rv_thickness=rv_thickness,
        rv_half_angle=anatomy.rv_half_angle * (0.7 + 0.3 * rv_profile),
    )


def _rotate(vector: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])


def _harmonic_factor(anatomy: _Anatomy, phi: np.ndarray) -> np.ndarray:
    """Radial scale 1 + small 2nd and 3rd harmonics, so that the LV is not a perfect ellipse."""
    h = anatomy.shape_harmonics
    return 1.0 + h[0, 0] * np.cos(2 * phi) + h[0, 1] * np.sin(2 * phi) + h[1, 0] * np.cos(3 * phi) + h[1, 1] * np.sin(3 * phi)


def _rv_profile(phi: np.ndarray, half_angle: float) -> np.ndarray:
    """Relative RV thickness over the angle around the LV: 1 at the middle, 0 at the insertions."""
    return np.clip(1.0 - (phi / half_angle) ** 2, 0.0, None) ** 0.6


def _heart_coordinates(
    anatomy: _Anatomy, geometry: _SliceGeometry, xy: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Return (rho, phi) of points given in mm: rho is the LV level-set radius, phi the angle from the RV axis."""
    dx = xy[0] - geometry.centre[0]
    dy = xy[1] - geometry.centre[1]
    c, s = np.cos(geometry.angle), np.sin(geometry.angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    phi = np.arctan2(v, u)
    rho = np.sqrt(u**2 + (v / anatomy.ellipticity) ** 2) / _harmonic_factor(anatomy, phi)
    return rho, phi


def _heart_points(anatomy: _Anatomy, geometry: _SliceGeometry, rho: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_heart_coordinates`: (K, 2) points in mm for level radii ``rho`` at angles ``phi``."""
    metric = np.sqrt(np.cos(phi) ** 2 + (np.sin(phi) / anatomy.ellipticity) ** 2)
    t = rho * _harmonic_factor(anatomy, phi) / metric
    u, v = t * np.cos(phi), t * np.sin(phi)
    c, s = np.cos(geometry.angle), np.sin(geometry.angle)
    x = geometry.centre[0] + c * u - s * v
    y = geometry.centre[1] + s * u + c * v
    return np.stack([x, y], axis=1)


def _coverage(distance_inside: np.ndarray, pixel: float) -> np.ndarray:
    """Fractional occupancy of a pixel from its signed distance (mm) inside a boundary."""
    return np.clip(0.5 + distance_inside / pixel, 0.0, 1.0)


def _render_slice(
    anatomy: _Anatomy, z: int, frame: str, xy: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, _SliceGeometry]:
    """Return the noise-free intensity and the dense label of one slice."""
    pixel = anatomy.spacing[0]
    geometry = _slice_geometry(anatomy, z, frame)

    # Scene coordinates: p left-right, q anterior-posterior, origin at the body centre.
    dx = xy[0] - anatomy.body_centre[0]
    dy = xy[1] - anatomy.body_centre[1]
    c, s = np.cos(anatomy.scene_angle), np.sin(anatomy.scene_angle)
    p = c * dx + s * dy
    q = -s * dx + c * dy
    a, b = anatomy.body_axes

    body_level = np.sqrt((p / a) ** 2 + (q / b) ** 2)
    body = _coverage((1.0 - body_level) * min(a, b), pixel)
    image = _INTENSITY["tissue"] * body
    fat_rim = _coverage((body_level - 0.9) * min(a, b), pixel) * body
    image = image + (_INTENSITY["fat"] - _INTENSITY["tissue"]) * fat_rim

    position = z * anatomy.spacing[2]
    for centre, sigma, gain in anatomy.blobs:
        g = np.exp(
            -0.5
            * (
                ((p - centre[0] * a * 0.7) / sigma[0]) ** 2
                + ((q - centre[1] * b * 0.7) / sigma[1]) ** 2
                + ((position - centre[2]) / sigma[2]) ** 2
            )
        )
        image = image * (1.0 + gain * g * body)

    # The left lung (positive p, on the side of the heart) is the smaller one.
    for side, width in ((-1.0, 0.34), (1.0, 0.28)):
        lung_level = np.sqrt(((p - side * 0.52 * a) / (width * a)) ** 2 + ((q + 0.05 * b) / (0.58 * b)) ** 2)
        lung = _coverage((1.0 - lung_level) * width * a, pixel)
        image = image * (1.0 - lung) + _INTENSITY["lung"] * lung

    spine = _coverage(16.0 - np.hypot(p, q - 0.78 * b), pixel)
    image = image * (1.0 - spine) + _INTENSITY["spine"] * spine
    aorta = _coverage(11.0 - np.hypot(p - 0.22 * a, q - 0.55 * b), pixel)
    image = image * (1.0 - aorta) + _INTENSITY["blood"] * 0.9 * aorta

    rho, phi = _heart_coordinates(anatomy, geometry, xy)
    rv_profile = _rv_profile(phi, geometry.rv_half_angle)
    rv_outer = geometry.epicardium + geometry.rv_thickness * rv_profile
    heart_extent = np.maximum(geometry.epicardium, rv_outer + anatomy.rv_wall * (rv_profile > 0))

    # The heart sits in fat and connective tissue that pushes the lungs aside.
    mediastinum = _coverage(heart_extent + 7.0 - rho, pixel) if geometry.epicardium > 0 else np.zeros_like(rho)
    image = image * (1.0 - mediastinum) + _INTENSITY["mediastinum"] * mediastinum

    label = np.zeros(rho.shape, dtype=np.uint8)
    if geometry.epicardium > 0:
        rv_wall = _coverage(rv_outer + anatomy.rv_wall - rho, pixel) * (rv_profile > 0) * (rho > geometry.epicardium)
        image = image * (1.0 - rv_wall) + _INTENSITY["myocardium"] * rv_wall
        epicardium = _coverage(geometry.epicardium - rho, pixel)
        image = image * (1.0 - epicardium) + _INTENSITY["myocardium"] * epicardium
        label[rho <= geometry.epicardium] = MYO

    if geometry.rv_thickness > 0:
        rv = (rho > geometry.epicardium) & (rho <= rv_outer) & (rv_profile > 0)
        rv_cover = _coverage(np.minimum(rv_outer - rho, rho - geometry.epicardium), pixel) * (rv_profile > 0)
        image = image * (1.0 - rv_cover) + _INTENSITY["blood"] * 0.95 * rv_cover
        label[rv] = RV

    if geometry.cavity > 0:
        cavity = _coverage(geometry.cavity - rho, pixel)
        image = image * (1.0 - cavity) + _INTENSITY["blood"] * cavity
        label[rho <= geometry.cavity] = LV
        if geometry.cavity > 10.0:
            # Papillary muscles: dark spots inside the blood pool that ACDC labels as LV cavity.
            radius = 0.16 * geometry.cavity
            centres = _heart_points(anatomy, geometry, np.full(2, 0.68 * geometry.cavity), anatomy.papillary)
            for centre in centres:
                muscle = _coverage(radius - np.hypot(xy[0] - centre[0], xy[1] - centre[1]), pixel)
                image = image * (1.0 - muscle) + _INTENSITY["myocardium"] * 1.3 * muscle

    return image, label, geometry


# --- scribbles ---------------------------------------------------------------------------------


def _rasterise(points_mm: np.ndarray, spacing: tuple[float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a polyline given in mm into a 1-voxel-wide boolean stroke."""
    mask = np.zeros(shape, dtype=bool)
    if len(points_mm) == 0:
        return mask
    voxels = points_mm / np.array(spacing[:2])
    # Resample at a quarter voxel so that consecutive rounded points are always 8-connected.
    steps = np.hypot(*np.diff(voxels, axis=0).T) if len(voxels) > 1 else np.zeros(0)
    dense = [voxels[:1]]
    for start, end, step in zip(voxels[:-1], voxels[1:], steps):
        count = max(int(np.ceil(step * 4)), 1)
        t = np.linspace(0.0, 1.0, count + 1)[1:, None]
        dense.append(start + t * (end - start))
    indices = np.rint(np.concatenate(dense)).astype(int)
    inside = (indices[:, 0] >= 0) & (indices[:, 0] < shape[0]) & (indices[:, 1] >= 0) & (indices[:, 1] < shape[1])
    indices = indices[inside]
    mask[indices[:, 0], indices[:, 1]] = True
    return mask


def _wobble(rng: np.random.Generator, count: int, amplitude: float) -> np.ndarray:
    """Smooth random offsets along a stroke, like an unsteady hand."""
    t = np.linspace(0.0, 1.0, count)
    frequency = rng.uniform(0.5, 2.0, size=2)
    phase = rng.uniform(0.0, 2 * np.pi, size=2)
    weights = rng.uniform(-1.0, 1.0, size=2)
    return amplitude * (weights[0] * np.sin(2 * np.pi * frequency[0] * t + phase[0]) + weights[1] * np.sin(2 * np.pi * frequency[1] * t + phase[1])) / 2.0


def _arc(rng: np.random.Generator, start: float, span: float, count: int) -> np.ndarray:
    direction = rng.choice([-1.0, 1.0])
    return start + direction * np.linspace(0.0, span, count)


def _scribble_slice(
    rng: np.random.Generator, anatomy: _Anatomy, geometry: _SliceGeometry, label: np.ndarray
) -> np.ndarray:
    """Draw the strokes of one slice; voxels keep the class of ``label`` where a stroke crosses it."""
    pixel = anatomy.spacing[0]
    scribble = np.full(label.shape, UNANNOTATED, dtype=np.uint8)
    strokes: list[tuple[int, np.ndarray]] = []

    if geometry.epicardium > 1.5 * pixel:
        inner = geometry.cavity
        middle = (inner + geometry.epicardium) / 2.0
        span = rng.uniform(np.deg2rad(140.0), np.deg2rad(300.0)) if inner > 0 else rng.uniform(0.0, np.pi)
        phi = _arc(rng, rng.uniform(-np.pi, np.pi), span, 120)
        if inner > 0:
            rho = middle + _wobble(rng, phi.size, 0.25 * (geometry.epicardium - inner))
            strokes.append((MYO, _heart_points(anatomy, geometry, rho, phi)))
        else:
            # An apical cap without cavity: a short line across the myocardium.
            rho = np.linspace(-0.6, 0.6, 40) * geometry.epicardium
            angle = rng.uniform(-np.pi, np.pi)
            points = _heart_points(anatomy, geometry, np.abs(rho), np.where(rho < 0, angle + np.pi, angle))
            strokes.append((MYO, points))

    if geometry.cavity > 2.0 * pixel:
        half = rng.uniform(0.3, 0.55) * geometry.cavity
        rho = np.linspace(-half, half, 40)
        rho = rho + _wobble(rng, rho.size, 0.3 * pixel)
        angle = rng.uniform(-np.pi, np.pi)
        points = _heart_points(anatomy, geometry, np.abs(rho), np.where(rho < 0, angle + np.pi, angle))
        strokes.append((LV, points))

    if geometry.rv_thickness > 2.0 * pixel:
        extent = rng.uniform(0.45, 0.8) * geometry.rv_half_angle
        phi = np.linspace(-extent, extent, 60) + rng.uniform(-0.15, 0.15) * geometry.rv_half_angle
        depth = geometry.rv_thickness * _rv_profile(phi, geometry.rv_half_angle)
        rho = geometry.epicardium + depth * (0.5 + _wobble(rng, phi.size, 0.2))
        strokes.append((RV, _heart_points(anatomy, geometry, rho, phi)))

    if geometry.epicardium > 0:
        phi = _arc(rng, rng.uniform(-np.pi, np.pi), rng.uniform(np.deg2rad(120.0), np.deg2rad(330.0)), 200)
        reach = geometry.epicardium + geometry.rv_thickness * _rv_profile(phi, geometry.rv_half_angle)
        gap = rng.uniform(8.0, 18.0) + anatomy.rv_wall
        rho = reach + gap + _wobble(rng, phi.size, 3.0)
        strokes.append((BACKGROUND, _heart_points(anatomy, geometry, rho, phi)))

    for value, points in strokes:
        stroke = _rasterise(points, anatomy.spacing, label.shape)
        # Keep only the voxels of the intended class: a stroke never contradicts the label.
        scribble[stroke & (label == value)] = value
    return scribble


# --- volumes -----------------------------------------------------------------------------------


def _bias_field(anatomy: _Anatomy, xy: tuple[np.ndarray, np.ndarray], nz: int) -> np.ndarray:
    """Smooth multiplicative coil sensitivity: exp of a quadratic in x, y plus a slope in z."""
    fov = np.array(anatomy.shape[:2]) * anatomy.spacing[0]
    x = xy[0] / fov[0] * 2.0 - 1.0
    y = xy[1] / fov[1] * 2.0 - 1.0
    k = anatomy.bias_coefficients
    in_plane = k[0] * x + k[1] * y + k[2] * x * y + k[3] * x**2 + k[4] * y**2
    z = np.linspace(-1.0, 1.0, nz)
    return np.exp(in_plane[..., None] + k[5] * z[None, None, :])


def generate_subject(seed: int, index: int) -> list[DemoCase]:
    """Generate the ED and ES frames of subject ``index`` (1-based) from ``seed``.

    Each subject draws from its own stream seeded by (seed, index), so subject 3 is the same
    whether 3 or 30 subjects are generated.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    anatomy = _sample_anatomy(rng)
    nx, ny, nz = anatomy.shape
    xs = (np.arange(nx) + 0.0) * anatomy.spacing[0]
    ys = (np.arange(ny) + 0.0) * anatomy.spacing[1]
    xy = np.meshgrid(xs, ys, indexing="ij")
    bias = _bias_field(anatomy, xy, nz)
    subject = f"subject{index:02d}"

    cases = []
    for frame in FRAMES:
        clean = np.zeros((nx, ny, nz))
        label = np.zeros((nx, ny, nz), dtype=np.uint8)
        scribble = np.full((nx, ny, nz), UNANNOTATED, dtype=np.uint8)
        for z in range(nz):
            clean[..., z], label[..., z], geometry = _render_slice(anatomy, z, frame, xy)
            # Most slices carry scribbles, as in the ACDC scribbles.
            if rng.random() < 0.9:
                scribble[..., z] = _scribble_slice(rng, anatomy, geometry, label[..., z])

        # In-plane point-spread function of the scanner; slices are acquired separately.
        blurred = ndimage.gaussian_filter(clean, sigma=(0.6, 0.6, 0.0))
        signal = blurred * bias * anatomy.intensity_scale
        sigma = anatomy.noise_fraction * anatomy.intensity_scale
        # Magnitude of a complex signal with Gaussian noise in both channels is Rician.
        real = signal + rng.normal(0.0, sigma, size=signal.shape)
        imaginary = rng.normal(0.0, sigma, size=signal.shape)
        image = np.sqrt(real**2 + imaginary**2).astype(np.float32)

        cases.append(
            DemoCase(
                case_id=f"{subject}_{frame}",
                subject=subject,
                frame=frame,
                image=image,
                label=label,
                scribble=scribble,
                spacing=anatomy.spacing,
                parameters=anatomy.summary(),
            )
        )
    return cases


def generate_demo(subjects: int = 8, seed: int = 0) -> list[DemoCase]:
    """Generate ``subjects`` synthetic subjects, ED and ES each, in case id order."""
    if subjects < 1:
        raise ValueError(f"number of demo subjects must be at least 1, got {subjects}")
    cases: list[DemoCase] = []
    for index in tqdm(range(1, subjects + 1), desc="demo subjects", unit="subject", disable=None):
        cases.extend(generate_subject(seed, index))
    return cases


def _check_output_dir(output_dir: Path) -> None:
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ValueError(f"--output-dir {output_dir} exists and is not a directory; choose another path")
    if any(output_dir.iterdir()) and not (output_dir / MARKER_FILE).is_file():
        raise ValueError(
            f"--output-dir {output_dir} exists, is not empty and contains no {MARKER_FILE}, so it is not an "
            "earlier demo dataset; remove it or choose another path"
        )


def write_demo(output_dir: str | os.PathLike, subjects: int = 8, seed: int = 0) -> Path:
    """Generate the demo dataset and write it to ``output_dir`` in the ``nifti_folder`` layout.

    The files are written into a temporary sibling directory that is renamed to ``output_dir``
    at the end, so an interrupted run leaves no partial dataset. An existing ``output_dir`` is
    replaced only if it is empty or an earlier demo dataset (it contains ``demo.json``).
    """
    output_dir = Path(output_dir)
    _check_output_dir(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    cases = generate_demo(subjects, seed)

    temporary = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        for case in cases:
            header = make_header(case.spacing)
            save_nifti(temporary / "images" / f"{case.case_id}.nii.gz", case.image, header)
            save_nifti(temporary / "labels" / f"{case.case_id}.nii.gz", case.label, header)
            save_nifti(temporary / "scribbles" / f"{case.case_id}.nii.gz", case.scribble, header)
        write_json(
            temporary / MARKER_FILE,
            {
                "generator": "helpnet.data.demo",
                "generator_version": GENERATOR_VERSION,
                "seed": seed,
                "subjects": subjects,
                "classes": list(CLASSES),
                "scribble_unannotated_value": UNANNOTATED,
                "cases": {
                    case.case_id: {"subject": case.subject, "frame": case.frame, **case.parameters}
                    for case in cases
                },
            },
        )
        if output_dir.exists():
            # The check above allows only an empty directory or an earlier demo dataset here.
            shutil.rmtree(output_dir)
        os.replace(temporary, output_dir)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)

    annotated = sum(int(np.count_nonzero(c.scribble != UNANNOTATED)) for c in cases)
    total = sum(c.scribble.size for c in cases)
    logger.info(
        "wrote %d demo cases of %d subjects (seed %d) to %s; %.2f%% of voxels carry a scribble",
        len(cases), subjects, seed, output_dir, 100.0 * annotated / total,
    )
    return output_dir


def _run_demo(args: argparse.Namespace) -> int:
    write_demo(args.output_dir, subjects=args.subjects, seed=args.seed)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="write the synthetic cardiac MR demo dataset",
        description="Generate synthetic short-axis cine MR volumes (ED and ES per subject) with dense "
        "labels and ACDC-like scribbles, in the nifti_folder layout.",
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="directory to create (replaced if it is an earlier demo dataset)")
    parser.add_argument("--subjects", type=int, default=8, help="number of subjects, each with an ED and an ES frame (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator; the same seed gives the same volumes (default: 0)")
    parser.set_defaults(func=_run_demo)
