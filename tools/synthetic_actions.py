"""Procedural action clips: one object performing one of 12 motion primitives, drawn in one of 4 styles.

The primitives are the "actions" shared by the four synthetic datasets; the styles are their visual
domains (METHOD.md section 1b). Everything is relative to the frame's short side, so a clip reads the
same at 320x240, 256x340 or after a re-encode to a 40-px short side: the object spans about 34-48% of
the short side and its motion covers a large part of the frame, so a tiny 3D CNN at 32x32 can see it.
The whole action happens inside the centred square of side min(width, height), the region a centre
crop keeps, so no crop of the loaders cuts it out of view.

Screen conventions (image y axis points down): `move_up` decreases y, `rotate_cw` turns clockwise as
seen on screen, so a horizontal flip swaps move_left/move_right and rotate_cw/rotate_ccw, and playing
a clip backwards swaps those pairs, move_up/move_down and grow/shrink.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

PRIMITIVES: tuple[str, ...] = (
    "move_left", "move_right", "move_up", "move_down",
    "rotate_cw", "rotate_ccw", "grow", "shrink",
    "shake", "bounce", "orbit", "blink",
    "pulse", "zigzag",
)

# A: bright textured rectangle on a dark noisy background
# B: coloured disk with a contrasting wedge on a smooth gradient, slight camera jitter
# C: outlined arrow on a flat low-contrast background with a static distractor
# D: cloud of coherently moving dots on mid-grey, with random dot flicker
STYLES: tuple[str, ...] = ("noisy_box", "gradient_disk", "flat_arrow", "dot_cloud")


@dataclass(frozen=True)
class Trajectory:
    """Per-frame pose of the object: centre (pixels), scale (x the base radius), angle (radians,
    clockwise on screen) and whether it is drawn at all."""

    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    visible: np.ndarray
    radius: float  # base radius in pixels; the shape fits in a circle of radius * scale


def _static_position(width: int, height: int, margin: float, rng: np.random.Generator) -> tuple[float, float]:
    return float(rng.uniform(margin, width - margin)), float(rng.uniform(margin, height - margin))


def make_trajectory(primitive: str, num_frames: int, width: int, height: int,
                    rng: np.random.Generator) -> Trajectory:
    """Random instance of `primitive`: size, position, speed and phase are drawn from `rng`.
    The motion stays inside the centred square of side min(width, height)."""
    short = min(width, height)
    centred = _square_trajectory(primitive, num_frames, short, rng)
    return Trajectory(centred.cx + (width - short) / 2, centred.cy + (height - short) / 2, centred.scale,
                      centred.angle, centred.visible, centred.radius)


def _square_trajectory(primitive: str, num_frames: int, short: int, rng: np.random.Generator) -> Trajectory:
    """The trajectory in a short x short square (origin at its top-left corner)."""
    width = height = short
    radius = float(rng.uniform(0.17, 0.24)) * short  # bounding circle: 34-48% of the short side
    t = np.linspace(0.0, 1.0, num_frames)
    ones = np.ones(num_frames)
    scale = ones.copy()
    angle = float(rng.uniform(0, 2 * np.pi)) * ones
    visible = np.ones(num_frames, dtype=bool)

    if primitive in ("move_left", "move_right", "move_up", "move_down"):
        horizontal = primitive in ("move_left", "move_right")
        along, across = (width, height) if horizontal else (height, width)
        room = along - 2 * radius
        distance = min(float(rng.uniform(0.5, 0.7)) * along, 0.95 * room)
        start = float(rng.uniform(radius + distance, along - radius))  # path runs toward 0 ...
        path = start - distance * t
        if primitive in ("move_right", "move_down"):
            path = along - path  # ... mirrored for the positive direction
        other = float(rng.uniform(radius, across - radius)) * ones
        cx, cy = (path, other) if horizontal else (other, path)
    elif primitive in ("rotate_cw", "rotate_ccw"):
        turn = float(rng.uniform(1.0, 1.6)) * np.pi
        sense = 1.0 if primitive == "rotate_cw" else -1.0
        angle = angle + sense * turn * t
        x, y = _static_position(width, height, radius, rng)
        cx, cy = x * ones, y * ones
    elif primitive in ("grow", "shrink"):
        small, large = float(rng.uniform(0.45, 0.60)), float(rng.uniform(1.30, 1.50))
        ramp = small * (large / small) ** t  # geometric: the same relative change every frame
        scale = ramp if primitive == "grow" else ramp[::-1].copy()
        x, y = _static_position(width, height, radius * large, rng)
        cx, cy = x * ones, y * ones
    elif primitive == "shake":
        amplitude = float(rng.uniform(0.10, 0.14)) * short
        cycles = float(rng.uniform(2.0, 3.0))
        x, y = _static_position(width, height, radius + amplitude, rng)
        cx = x + amplitude * np.sin(2 * np.pi * cycles * t + rng.uniform(0, 2 * np.pi))
        cy = y * ones
    elif primitive == "bounce":
        height_px = float(rng.uniform(0.22, 0.30)) * short
        bounces = float(rng.uniform(1.2, 1.8))
        x = float(rng.uniform(radius, width - radius))
        floor = float(rng.uniform(radius + height_px, height - radius))
        cx = x * ones
        cy = floor - height_px * np.abs(np.sin(np.pi * bounces * t + rng.uniform(0, np.pi)))
    elif primitive == "orbit":
        orbit_radius = float(rng.uniform(0.16, 0.22)) * short
        turns = float(rng.uniform(0.75, 1.25)) * rng.choice([-1.0, 1.0])
        x, y = _static_position(width, height, radius + orbit_radius, rng)
        phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * turns * t
        cx, cy = x + orbit_radius * np.cos(phase), y + orbit_radius * np.sin(phase)
    elif primitive == "pulse":
        cycles = float(rng.uniform(2.0, 2.6))
        depth = float(rng.uniform(0.30, 0.40))
        scale = 1.0 + depth * np.sin(2 * np.pi * cycles * t + rng.uniform(0, 2 * np.pi))
        x, y = _static_position(width, height, radius * (1 + depth), rng)
        cx, cy = x * ones, y * ones
    elif primitive == "zigzag":
        # drifts across the square while going up and down in straight segments (a triangle wave);
        # the drift direction is random, so a flip or a reversal gives another zigzag
        amplitude = float(rng.uniform(0.12, 0.16)) * short
        teeth = float(rng.uniform(2.0, 2.5))
        drift = float(rng.uniform(0.25, 0.35)) * short * rng.choice([-1.0, 1.0])
        x, y = _static_position(width, height, radius + abs(drift) / 2, rng)
        y = float(np.clip(y, radius + amplitude, height - radius - amplitude))
        phase = teeth * t + rng.uniform(0, 1)
        triangle = 2 * np.abs(2 * (phase - np.floor(phase + 0.5))) - 1  # in [-1, 1]
        cx, cy = x + drift * (t - 0.5), y + amplitude * triangle
    elif primitive == "blink":
        blinks = float(rng.uniform(1.5, 2.0))
        visible = np.sin(2 * np.pi * blinks * t + rng.uniform(0, 2 * np.pi)) > 0
        x, y = _static_position(width, height, radius, rng)
        cx, cy = x * ones, y * ones
    else:
        raise ValueError(f"primitive={primitive!r}: allowed values are {list(PRIMITIVES)}")
    return Trajectory(np.asarray(cx, float), np.asarray(cy, float), scale, angle, visible, radius)


def _local_coords(traj: Trajectory, i: int, box: tuple[int, int, int, int],
                  shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Pixel grid of `box` (x0, y0, x1, y1) in the object's frame, unit = radius * scale.
    `shift` moves the object on screen (camera jitter)."""
    x0, y0, x1, y1 = box
    unit = traj.radius * traj.scale[i]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - traj.cx[i] - shift[0])[None, :] / unit
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - traj.cy[i] - shift[1])[:, None] / unit
    c, s = np.float32(np.cos(traj.angle[i])), np.float32(np.sin(traj.angle[i]))
    return c * dx + s * dy, c * dy - s * dx


def _object_box(traj: Trajectory, i: int, width: int, height: int,
                shift: tuple[float, float] = (0.0, 0.0)) -> tuple[int, int, int, int]:
    """Screen box (x0, y0, x1, y1) that holds the object in frame i, clipped to the frame."""
    r = traj.radius * traj.scale[i] + 2
    cx, cy = traj.cx[i] + shift[0], traj.cy[i] + shift[1]
    return max(0, int(cx - r)), max(0, int(cy - r)), min(width, int(cx + r) + 1), min(height, int(cy + r) + 1)


def _bright_colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A saturated colour: one channel high, the others random below it."""
    colour = rng.uniform(low * 0.3, high, size=3)
    colour[rng.integers(3)] = rng.uniform(low, high)
    return colour.astype(np.float32)


def _render_noisy_box(traj: Trajectory, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    temporal = int(rng.integers(3, 8))  # temporal noise spans [-temporal, temporal]
    background = rng.uniform(15, 45) + rng.uniform(-8, 8, size=3)
    static_noise = rng.normal(0, rng.uniform(8, 18), size=(height, width, 1))
    # lowered by `temporal` and clipped so adding the noise below stays in uint8 without a clip
    base = (np.clip(background + static_noise, temporal, 255 - temporal) - temporal).astype(np.uint8)
    # temporal noise: random windows of one noise bank, far cheaper than fresh noise per frame
    # (3 channels: adding a broadcast single channel is several times slower)
    bank = rng.integers(0, 2 * temporal + 1, size=(height + 32, width + 32, 3), dtype=np.uint8)
    colour = _bright_colour(rng, 190, 255)
    aspect = float(rng.uniform(0.55, 0.85))  # half-height / half-width of the rectangle
    half_w, half_h = 1 / np.hypot(1, aspect), aspect / np.hypot(1, aspect)
    checker = float(rng.uniform(0.25, 0.4))  # checker cell size, in radius units
    shades = np.stack([colour, 0.6 * colour]).astype(np.uint8)
    frames = np.empty((len(traj.cx), height, width, 3), np.uint8)
    for i in range(len(traj.cx)):
        oy, ox = rng.integers(0, 32, size=2)
        np.add(base, bank[oy:oy + height, ox:ox + width], out=frames[i])
        if traj.visible[i]:
            x0, y0, x1, y1 = box = _object_box(traj, i, width, height)
            u, v = _local_coords(traj, i, box)
            inside = (np.abs(u) < half_w) & (np.abs(v) < half_h)
            cell = (np.floor(u / checker) + np.floor(v / checker)).astype(np.int64) % 2
            frames[i, y0:y1, x0:x1][inside] = shades[cell[inside]]
    return frames


def _render_gradient_disk(traj: Trajectory, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    jitter = max(1, round(min(width, height) / 80))  # ~3 px at 240
    start, end = rng.uniform(50, 200, size=3), rng.uniform(50, 200, size=3)
    direction = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height + 2 * jitter, 0:width + 2 * jitter].astype(np.float32)
    ramp = xs * np.cos(direction) + ys * np.sin(direction)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    canvas = (start + (end - start) * ramp[..., None]).astype(np.uint8)
    disk, wedge = _bright_colour(rng, 170, 255).astype(np.uint8), _bright_colour(rng, 20, 110).astype(np.uint8)
    wedge_slope = np.float32(np.tan(rng.uniform(0.4, 0.7)))  # wedge half-angle 23-40 deg: shows rotation
    frames = np.empty((len(traj.cx), height, width, 3), np.uint8)
    shake = np.zeros(2, int)
    for i in range(len(traj.cx)):
        # camera jitter: a small random walk of the view over the scene, object included
        shake = np.clip(shake + rng.integers(-1, 2, size=2), -jitter, jitter)
        jx, jy = shake + jitter
        frames[i] = canvas[jy:jy + height, jx:jx + width]
        if traj.visible[i]:
            shift = (-float(shake[0]), -float(shake[1]))
            x0, y0, x1, y1 = box = _object_box(traj, i, width, height, shift)
            u, v = _local_coords(traj, i, box, shift)
            inside = u * u + v * v < 1
            in_wedge = inside & (np.abs(v) < u * wedge_slope)
            patch = frames[i, y0:y1, x0:x1]
            patch[inside] = disk
            patch[in_wedge] = wedge
    return frames


# isosceles arrow head in unit-radius local coordinates: tip on +u, no rotational symmetry
_ARROW = np.array([[1.0, 0.0], [-0.8, 0.7], [-0.8, -0.7]], np.float32)


def _inside_triangle(u: np.ndarray, v: np.ndarray, corners: np.ndarray) -> np.ndarray:
    signs = []
    for k in range(3):
        (ax, ay), (bx, by) = corners[k], corners[(k + 1) % 3]
        signs.append((bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0)
    return (signs[0] == signs[1]) & (signs[1] == signs[2])


def _render_flat_arrow(traj: Trajectory, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(90, 170)
    background = np.clip(grey + rng.uniform(-10, 10, size=3), 0, 255)
    contrast = rng.uniform(60, 90) * rng.choice([-1.0, 1.0])
    outline = np.clip(background + contrast + rng.uniform(-10, 10, size=3), 0, 255)
    thickness = float(rng.uniform(0.28, 0.38))  # of the arrow's size
    centroid = _ARROW.mean(axis=0)
    inner = centroid + (_ARROW - centroid) * (1 - thickness)
    scene = np.empty((height, width, 3), np.uint8)
    scene[:] = background.astype(np.uint8)
    # static distractor, drawn with a contrast close to the object's so it cannot be told by colour
    short = min(width, height)
    half = float(rng.uniform(0.06, 0.10)) * short
    dx, dy = rng.uniform(half, width - half), rng.uniform(half, height - half)
    ys, xs = np.mgrid[0:height, 0:width]
    if rng.random() < 0.5:
        mask = (np.abs(xs - dx) < half) & (np.abs(ys - dy) < half)
    else:
        mask = (xs - dx) ** 2 + (ys - dy) ** 2 < half * half
    scene[mask] = np.clip(background + 0.7 * contrast, 0, 255).astype(np.uint8)
    frames = np.repeat(scene[None], len(traj.cx), axis=0)
    for i in range(len(traj.cx)):
        if not traj.visible[i]:
            continue
        x0, y0, x1, y1 = box = _object_box(traj, i, width, height)
        u, v = _local_coords(traj, i, box)
        ring = _inside_triangle(u, v, _ARROW) & ~_inside_triangle(u, v, inner)
        frames[i, y0:y1, x0:x1][ring] = outline.astype(np.uint8)
    return frames


def _render_dot_cloud(traj: Trajectory, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    short = min(width, height)
    dot = max(2, round(short * float(rng.uniform(0.04, 0.05))))  # dot side, pixels
    num_dots = int(rng.integers(25, 45))
    # dots spread uniformly over the unit disk, fixed in the object's frame (coherent motion)
    r = np.sqrt(rng.uniform(0, 1, num_dots)) * (1 - dot / (2 * traj.radius))
    phi = rng.uniform(0, 2 * np.pi, num_dots)
    cloud_u, cloud_v = r * np.cos(phi), r * np.sin(phi)
    polarity = rng.choice([-1.0, 1.0])
    dot_values = np.clip(128 + polarity * rng.uniform(70, 110, size=(num_dots, 1)) + rng.uniform(-15, 15, size=(num_dots, 3)), 0, 255)
    num_flicker = int(rng.integers(8, 16))
    frames = np.empty((len(traj.cx), height, width, 3), np.uint8)
    frames[:] = np.uint8(np.clip(128 + rng.uniform(-10, 10), 0, 255))
    keep_probability = float(rng.uniform(0.8, 0.92))
    for i in range(len(traj.cx)):
        frame = frames[i]
        # background flicker: random dots of both polarities, new every frame
        fx = rng.integers(0, width - dot, num_flicker)
        fy = rng.integers(0, height - dot, num_flicker)
        fv = rng.choice([25, 230], size=num_flicker)
        for x, y, value in zip(fx, fy, fv):
            frame[y:y + dot, x:x + dot] = value
        if not traj.visible[i]:
            continue
        c, s = np.cos(traj.angle[i]), np.sin(traj.angle[i])
        unit = traj.radius * traj.scale[i]
        xs = traj.cx[i] + unit * (c * cloud_u - s * cloud_v) - dot / 2
        ys = traj.cy[i] + unit * (s * cloud_u + c * cloud_v) - dot / 2
        shown = rng.random(num_dots) < keep_probability
        for x, y, value in zip(xs[shown].astype(int), ys[shown].astype(int), dot_values[shown]):
            frame[max(0, y):max(0, y + dot), max(0, x):max(0, x + dot)] = value
    return frames


_RENDERERS: dict[str, Callable[[Trajectory, int, int, np.random.Generator], np.ndarray]] = {
    "noisy_box": _render_noisy_box,
    "gradient_disk": _render_gradient_disk,
    "flat_arrow": _render_flat_arrow,
    "dot_cloud": _render_dot_cloud,
}


def render_clip(primitive: str, style: str, num_frames: int, width: int, height: int,
                rng: np.random.Generator) -> np.ndarray:
    """Render one clip as RGB frames `[num_frames, height, width, 3]` uint8.

    The same `rng` state gives the same frames; the primitive's parameters (size, position, speed,
    phase) and the style's (colours, noise, distractor) are all drawn from it.
    """
    if style not in _RENDERERS:
        raise ValueError(f"style={style!r}: allowed values are {list(STYLES)}")
    if num_frames < 2 or width < 16 or height < 16:
        raise ValueError(f"clip of {num_frames} frames at {width}x{height}: need >= 2 frames and >= 16x16 pixels")
    trajectory = make_trajectory(primitive, num_frames, width, height, rng)
    return _RENDERERS[style](trajectory, width, height, rng)
