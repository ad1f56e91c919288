"""A procedural video object segmentation dataset, deterministic by seed.

Each video is a parametric scene drawn from one integer seed: a textured background seen
through a panning camera, 1..4 annotated *target* objects and, in some videos, unannotated
*distractors* that look like one of the targets. Every trajectory (centre, size, rotation,
camera offset) is precomputed as an array over all frames when the scene is built, so any
frame can be rendered on its own in well under a millisecond at 128x224 (OpenCV rasterising and
affine warps); training reads three frames of a video without rendering the rest. Building a
scene (about 5 ms) rasterises the silhouettes of all frames once, to find when each target is
visible and to measure the factors.

What a scene contains
---------------------
- **Background**: a smooth random field of muted colours with stripes, soft blobs or speckle,
  plus fine noise; it is larger than the frame and the camera pans over it (the whole background
  translates by a sub-pixel offset per frame).
- **Targets**: shapes (ellipse, rectangle, triangle, star, regular polygon, blob) with a texture
  (noisy solid colour, stripes, checker, dots, rings) drawn in the object's own coordinates, so
  the texture moves, turns and scales with it. The targets of one video never share a shape, a
  texture kind, or a hue band, so they can be told apart by appearance. Sizes (bounding
  diameter) lie around ``min_object_size..max_object_size`` of the frame height.
- **Motion**: centres follow a slow drift plus a sum of sinusoids, reflected at the walls of a box
  that keeps at least half of an object in frame; size and rotation change smoothly over time.
- **Layers**: every object and distractor has its own depth; frames are painted back to front,
  and masks show only the visible pixels of each target (distractors are background, 0).

The realistic preset (``conf/dataset/scene/realistic.yaml``) turns on knobs that draw from a
stream of their own, so a seed's simple draws stay as they are: organic outlines that deform
and articulated ones whose limbs swing (`deformation`), photo textures and backgrounds
(`photos`), camera zoom (`camera`), and light, motion blur, noise and JPEG (`optics`); masks
and flow stay exact.

Factors (``VideoInfo.factors``; each is *measured* on the built scene, so it is True only when
the thing really happens, whether or not it was staged on purpose):

- ``distractors``: an unannotated object with the same shape family and texture kind as one of
  the targets, in a similar but shifted colour, is at least a quarter visible in some frame.
- ``occlusion``: some target loses at least 10% of its in-frame area to another object (target or
  distractor) in some frame. Staged by sending an object on top of a target; videos that do not
  stage it are re-drawn a few times to keep objects apart.
- ``fast_motion``: some visible target moves its centre by at least ``FAST_MOTION_FRACTION`` of
  the shorter frame side between two consecutive frames. Staged as a one-frame jump; ordinary
  motion stays well below the threshold (exits included).
- ``leaves_frame``: some target is at least 30% visible, then less than 10% in frame, then at least
  30% visible again. Staged as a smooth excursion through the nearest frame edge.
- ``late_objects``: some target is first visible after frame 0 (its first mask is given there,
  YouTube-VOS style). Staged by spawning a target at a free spot at a later frame.

``SyntheticSource`` spreads the staged factors evenly over a split (see `source`), and
``SyntheticScene.flow(t, reference)`` is the exact flow between any two frames (see `flow`).

Run ``python -m vos.data.synthetic --out data/syn --videos 8 --frames 40 --seed 0`` to export a
split pair in the DAVIS 2017 layout (see `export_davis`).

Modules, each with one job (none imports a module that imports it):

- `scene`: `SyntheticScene`, the public API of one video, composed of the modules below;
- `layers`: the data a scene is drawn into (`Layer`, `ScenePlan`);
- `cast`: the objects of a video and how they look, size and turn;
- `deformation`: organic outlines, limbs and the deformation ``D_t`` of unit coordinates;
- `photos`: the photos shipped by scikit-image and scikit-learn;
- `camera`: the zoom, and the map between frame pixels and background coordinates;
- `optics`: motion blur, light, noise and JPEG on a painted frame;
- `staging`: camera pan, trajectories, and the staging of each factor;
- `composition`: which layer is on top at each pixel of a frame;
- `render`: background world, sprites, painting a frame;
- `factors`: FACTOR_NAMES and measuring which factors a built scene shows;
- `flow`: the exact flow between two frames;
- `source`: `SyntheticSource` (a split as a `VideoSource`), `video_seed`;
- `export`: `export_davis`, the DAVIS-layout export (command line: `vos.cli.export`).
"""

from vos.data.synthetic.cast import SHAPE_KINDS, TEXTURE_KINDS
from vos.data.synthetic.export import export_davis, flow_path
from vos.data.synthetic.factors import (
    DISTRACTOR_VISIBLE,
    FACTOR_NAMES,
    FAST_MOTION_FRACTION,
    OCCLUSION_LOSS,
    OUT_OF_FRAME,
    WELL_VISIBLE,
)
from vos.data.synthetic.render import BACKGROUND_STYLES
from vos.data.synthetic.scene import MAX_OBJECTS, SyntheticScene
from vos.data.synthetic.source import (
    MIN_VAL_FRAMES,
    SPLITS,
    SyntheticSource,
    dataset_config_defaults,
    video_seed,
)

__all__ = [
    "BACKGROUND_STYLES",
    "DISTRACTOR_VISIBLE",
    "FACTOR_NAMES",
    "FAST_MOTION_FRACTION",
    "MAX_OBJECTS",
    "MIN_VAL_FRAMES",
    "OCCLUSION_LOSS",
    "OUT_OF_FRAME",
    "SHAPE_KINDS",
    "SPLITS",
    "TEXTURE_KINDS",
    "WELL_VISIBLE",
    "SyntheticScene",
    "SyntheticSource",
    "dataset_config_defaults",
    "export_davis",
    "flow_path",
    "video_seed",
]
