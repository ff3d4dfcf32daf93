"""A seeded world of flat-coloured shapes, and the captions that describe each scene.

A scene is one to three shapes (circle, square, triangle, star, diamond) in named colours, three
sizes and the nine cells of a 3x3 grid, on a plain or two-tone (top/bottom) neutral background.
The caption is made from the same parameters ("a small red circle at the top left on a white
background"), so every picture's ground truth is known: each object's mask, the edge map and the
label map come with it (inpainting and ControlNet work on this model can use them later).

Some (colour, shape, position) triples are *held out*: training scenes never contain them, and the
acceptance test prompts are made only of them, so the test measures prompts the model never saw.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128

COLORS = {  # name -> RGB; far apart from each other and from the neutral backgrounds
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
    "orange": (245, 130, 20),
    "purple": (130, 40, 190),
    "pink": (250, 120, 200),
    "cyan": (30, 205, 225),
}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "star", "diamond")
SIZES = {"small": 15, "medium": 22, "large": 31}  # half-extent in pixels at 128x128
POSITIONS = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
POSITION_PHRASE = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
CELL_CENTRE = (0.25, 0.5, 0.75)  # fraction of the image; a position is row/column of a 3x3 grid


def position_cell(position: str) -> tuple[int, int]:
    """(row, column) of a named position in the 3x3 grid."""
    i = POSITIONS.index(position)
    return i // 3, i % 3


def is_held_out(color: str, shape: str, position: str) -> bool:
    """About 1 in 8 (colour, shape, position) triples never appear in training scenes."""
    digest = hashlib.sha256(f"{color}|{shape}|{position}".encode()).digest()
    return digest[0] % 8 == 0


def held_out_triples() -> list[tuple[str, str, str]]:
    return [(c, s, p) for c in COLORS for s in SHAPES for p in POSITIONS if is_held_out(c, s, p)]


@dataclass
class Obj:
    shape: str
    color: str
    size: str
    position: str
    cx: float  # centre in pixels
    cy: float

    def phrase(self, with_size: bool = True, with_position: bool = True) -> str:
        return join_words(w for w, _ in self.phrase_words(with_size, with_position))

    def phrase_words(
        self, with_size: bool = True, with_position: bool = True
    ) -> list[tuple[str, str | None]]:
        """The phrase as (word, the attribute it completes): "a small red circle at the top left"
        -> ("a", None), ("small", "size"), ("red", "color"), ("circle", "shape"), ("at", None),
        ("the", None), ("top", None), ("left", "position"). A position is complete only at its last
        word ("at the top" may go on with "left")."""
        words: list[tuple[str, str | None]] = [(self.size, "size")] if with_size else []
        words += [(self.color, "color"), (self.shape, "shape")]
        words.insert(0, ("an" if words[0][0][0] in "aeiou" else "a", None))
        if with_position:
            pos = POSITION_PHRASE[self.position].split()
            words += [(w, None) for w in pos[:-1]] + [(pos[-1], "position")]
        return words


def join_words(words) -> str:
    return " ".join(words).replace(" ,", ",")


@dataclass
class Scene:
    objects: list[Obj]
    background: tuple[str, ...]  # one name (plain) or two (top, bottom)
    seed: int = 0
    extras: dict = field(default_factory=dict)

    def caption(self, rng: random.Random | None = None) -> str:
        """The full caption, or with a random rng a variant that leaves some details out (so short
        prompts like "a red circle" work too)."""
        return join_words(w for w, _, _ in self.caption_words(rng))

    def caption_words(self, rng: random.Random | None = None) -> list[tuple[str, int, str | None]]:
        """The caption as (word, what it describes, the attribute it completes): the object's
        number (1-based), 0 for the background, -1 for joining words ("," and "and")."""
        drop = (lambda p: rng.random() < p) if rng else (lambda p: False)
        phrases = [
            o.phrase_words(with_size=not drop(0.25), with_position=not drop(0.2)) for o in self.objects
        ]
        words: list[tuple[str, int, str | None]] = []
        for i, phrase in enumerate(phrases, start=1):
            if i > 1:
                words.append(("and", -1, None) if i == len(phrases) else (",", -1, None))
            words += [(w, i, attr) for w, attr in phrase]
        if not drop(0.15):
            words += [("on", 0, None), ("a", 0, None), (self.background[0], 0, "bg_top")]
            if len(self.background) == 2:
                words += [("and", 0, None), (self.background[1], 0, "bg_bottom")]
            words.append(("background", 0, "bg_bottom" if len(self.background) == 1 else None))
        return words


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        r *= 0.86  # same visual weight as a circle of radius r
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        h = r * 0.95
        return [(cx, cy - h), (cx + r, cy + h * 0.8), (cx - r, cy + h * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    return None  # circle


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    poly = _shape_polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def random_scene(rng: random.Random, *, n_objects: int | None = None, held_out: bool = False) -> Scene:
    """A random scene. ``held_out=False``: no object is a held-out (colour, shape, position) triple;
    ``held_out=True``: every object is one."""
    if n_objects is None:
        n_objects = rng.choices((1, 2, 3), weights=(0.6, 0.25, 0.15))[0]
    cells = rng.sample(POSITIONS, n_objects)
    objects = []
    for position in cells:
        while True:
            color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
            if is_held_out(color, shape, position) == held_out:
                break
        size = rng.choice(list(SIZES))
        row, col = position_cell(position)
        jitter = SIZE * 0.035
        cx = CELL_CENTRE[col] * SIZE + rng.uniform(-jitter, jitter)
        cy = CELL_CENTRE[row] * SIZE + rng.uniform(-jitter, jitter)
        objects.append(Obj(shape, color, size, position, cx, cy))
    names = list(BACKGROUNDS)
    background = (rng.choice(names),) if rng.random() < 0.75 else tuple(rng.sample(names, 2))
    return Scene(objects, background)


def scene_from_words(
    color: str, shape: str, position: str, size: str = "medium", background: tuple[str, ...] = ("white",)
) -> Scene:
    """One centred-in-its-cell object: the scene a single-object prompt describes."""
    row, col = position_cell(position)
    return Scene(
        [Obj(shape, color, size, position, CELL_CENTRE[col] * SIZE, CELL_CENTRE[row] * SIZE)],
        tuple(background),
    )


@dataclass
class Rendered:
    image: np.ndarray  # [H, W, 3] uint8
    labels: np.ndarray  # [H, W] int: 0 background, i the i-th object (1-based) as visible
    masks: np.ndarray  # [n, H, W] bool, visible part of each object
    edges: np.ndarray  # [H, W] uint8 (255 where the label or background tone changes)


def render(scene: Scene, size: int = SIZE) -> Rendered:
    """Draw a scene (later objects in front of earlier ones)."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background[0]])
    draw = ImageDraw.Draw(img)
    tone = np.zeros((size, size), np.int32)
    if len(scene.background) == 2:
        draw.rectangle([0, size // 2, size, size], fill=BACKGROUNDS[scene.background[1]])
        tone[size // 2 :] = 1
    lab_img = Image.new("L", (size, size), 0)
    lab_draw = ImageDraw.Draw(lab_img)
    scale = size / SIZE
    for i, o in enumerate(scene.objects, start=1):
        r = SIZES[o.size] * scale
        _draw_shape(draw, o.shape, o.cx * scale, o.cy * scale, r, COLORS[o.color])
        _draw_shape(lab_draw, o.shape, o.cx * scale, o.cy * scale, r, i)
    labels = np.asarray(lab_img, dtype=np.int32)
    masks = np.array([labels == i for i in range(1, len(scene.objects) + 1)], dtype=bool).reshape(
        -1, size, size
    )
    region = labels * 2 + tone * (labels == 0)
    edge = np.zeros_like(region, dtype=bool)
    edge[:, 1:] |= region[:, 1:] != region[:, :-1]
    edge[1:, :] |= region[1:, :] != region[:-1, :]
    return Rendered(np.asarray(img, dtype=np.uint8).copy(), labels, masks, edge.astype(np.uint8) * 255)


def training_scenes(seed: int, count: int) -> list[Scene]:
    """``count`` training scenes (no held-out triple), the same for the same seed."""
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(count)]


def test_prompts(count: int = 60, seed: int = 1234) -> list[tuple[str, Scene]]:
    """Held-out single-object prompts with the scene each describes (full captions)."""
    rng = random.Random(seed)
    triples = held_out_triples()
    rng.shuffle(triples)
    out, seen = [], set()
    while len(out) < count:
        color, shape, position = triples[len(out) % len(triples)]
        scene = scene_from_words(
            color, shape, position, rng.choice(list(SIZES)), (rng.choice(list(BACKGROUNDS)),)
        )
        caption = scene.caption()
        if caption in seen:
            continue
        seen.add(caption)
        out.append((caption, scene))
    return out
