"""A MuJoCo scene drawn inside JAX by casting one ray per pixel.

``make_raycaster(mj_model, width, height, camera)`` returns a pure function
``render(data) -> uint8 [height, width, 3]`` of an ``mjx.Data`` (any object
with ``geom_xpos [G, 3]``, ``geom_xmat [G, 3, 3]``, ``cam_xpos [C, 3]`` and
``cam_xmat [C, 3, 3]``, e.g. the ``pipeline_state`` of a brax MJX env). It
jits, vmaps over environments and seeds, and runs inside ``lax.scan``: the
model's static data (geom types, sizes, colours, the floor's texture) are
constants of the traced function, and the state only moves the geoms and
the camera. A pixel costs one ray against every visible geom (no bounding
volume hierarchy): the brax tasks have 5 to 18 geoms.

Camera (MuJoCo's convention): the camera frame's ``-z`` axis is the viewing
direction, ``+y`` is up and ``+x`` right; ``fovy`` is the vertical field of
view. The ray of pixel (row ``i``, column ``j``) has direction
``R_cam [u, v, -1] / |.|`` with ``v = (1 - 2 (i + 1/2) / H) tan(fovy / 2)``
and ``u = (2 (j + 1/2) / W - 1) tan(fovy / 2) W / H``, from ``cam_xpos``.
The brax tasks' ``track`` cameras follow the torso (``trackcom``); MJX
computes their pose in ``cam_xpos`` / ``cam_xmat`` like MuJoCo's C code.

Intersections (``intersect``), with the ray moved into the geom's frame,
``p = R^T (o - x)``, ``d = R^T w`` (``R`` = ``geom_xmat``, ``|w| = 1``), and
``t`` the smallest non-negative root (the far root when the origin is
inside a closed geom, as ``mj_ray`` does):

* plane (``size[0:2]`` half-extents, 0 = infinite): ``t = -p_z / d_z``, only
  for rays that come from above (``d_z < 0``), within the extents;
* sphere ``r``: ``|p + t d|^2 = r^2``;
* ellipsoid ``s``: the sphere case for ``p / s``, ``d / s`` (``t`` keeps its
  meaning because the scaling is linear);
* capsule ``(r, h)``: the infinite cylinder ``x^2 + y^2 = r^2`` where
  ``|z| <= h``, and the spheres of radius ``r`` at ``z = +-h``;
* cylinder ``(r, h)``: the same side, and the two discs ``z = +-h`` where
  ``x^2 + y^2 <= r^2``;
* box ``s``: the slab method, ``t_near = max_i min(t_i^-, t_i^+)``, ``t_far
  = min_i max(t_i^-, t_i^+)``, a hit when ``t_near <= t_far``, ``t_far >= 0``.

Visibility: geoms in groups 0-2 (MuJoCo's viewer default) with non-zero
alpha, as ``mujoco.mj_ray`` with ``geomgroup = (1, 1, 1, 0, 0, 0)``; the test
compares depth and geom id per pixel with ``mj_ray`` on the same state.

Shading: the hit geom's colour (its material's RGBA when the geom has a
material and MuJoCo's default geom RGBA, as MuJoCo's renderer does; a
plane's 2-D texture sampled at the hit point, which draws the brax tasks'
checkered floor), lit by the model's directional lights and the headlight
with Lambert's law, ``c (a + sum_l d_l max(0, -n . l))`` with ``n`` the
outward surface normal at the hit point, facing the viewer. Rays that hit
nothing take the skybox texture's vertical gradient (or black).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

PLANE, SPHERE, CAPSULE, ELLIPSOID, CYLINDER, BOX = (
    int(mujoco.mjtGeom.mjGEOM_PLANE),
    int(mujoco.mjtGeom.mjGEOM_SPHERE),
    int(mujoco.mjtGeom.mjGEOM_CAPSULE),
    int(mujoco.mjtGeom.mjGEOM_ELLIPSOID),
    int(mujoco.mjtGeom.mjGEOM_CYLINDER),
    int(mujoco.mjtGeom.mjGEOM_BOX),
)
SUPPORTED = (PLANE, SPHERE, CAPSULE, ELLIPSOID, CYLINDER, BOX)
VISIBLE_GROUPS = (0, 1, 2)
_INF = jnp.inf
_DEFAULT_RGBA = np.array([0.5, 0.5, 0.5, 1.0], np.float32)


def camera_rays(cam_mat: jax.Array, fovy: float, width: int, height: int) -> jax.Array:
    """Unit ray directions ``[height, width, 3]`` (world frame) of a MuJoCo camera.

    Args:
      cam_mat: the camera's frame ``[3, 3]`` (``cam_xmat``; columns x right,
        y up, z backwards).
      fovy: vertical field of view in degrees.
      width: image width in pixels.
      height: image height in pixels.
    """
    half = np.tan(np.deg2rad(fovy) / 2)
    v = (1 - 2 * (np.arange(height) + 0.5) / height) * half
    u = (2 * (np.arange(width) + 0.5) / width - 1) * half * width / height
    local = np.stack(np.broadcast_arrays(u[None, :], v[:, None], -np.ones((1, 1))), -1)
    local /= np.linalg.norm(local, axis=-1, keepdims=True)
    return jnp.asarray(local, jnp.float32) @ cam_mat.T


def _smallest_root(a: jax.Array, b: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Roots of ``a t^2 + 2 b t + c`` (``a > 0``): ``(t_near, t_far)``, inf if none."""
    disc = b * b - a * c
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    near = jnp.where(disc >= 0, (-b - root) / a, _INF)
    far = jnp.where(disc >= 0, (-b + root) / a, _INF)
    return near, far


def _first_hit(near: jax.Array, far: jax.Array) -> jax.Array:
    """The first non-negative of ``near <= far`` (inf if both are behind)."""
    return jnp.where(near >= 0, near, jnp.where(far >= 0, far, _INF))


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    tiny = 1e-12
    den = jnp.where(jnp.abs(den) < tiny, jnp.where(den < 0, -tiny, tiny), den)
    return num / den


def _hit_plane(p, d, size):
    t = jnp.where(d[..., 2] < -1e-12, -p[..., 2] / jnp.minimum(d[..., 2], -1e-12), _INF)
    x = p + t[..., None] * d
    inside = jnp.ones_like(t, dtype=bool)
    for axis in (0, 1):
        extent = size[..., axis]
        inside &= (extent <= 0) | (jnp.abs(x[..., axis]) <= extent)
    return jnp.where(inside & (t >= 0), t, _INF)


def _hit_sphere(p, d, size):
    r = size[..., 0]
    near, far = _smallest_root(jnp.sum(d * d, -1), jnp.sum(p * d, -1), jnp.sum(p * p, -1) - r * r)
    return _first_hit(near, far)


def _hit_ellipsoid(p, d, size):
    return _hit_sphere(p / size, d / size, jnp.ones_like(size))


def _side(p, d, r, h):
    """The open cylinder ``x^2 + y^2 = r^2``, ``|z| <= h``: first and last hits."""
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = p[..., 0] * d[..., 0] + p[..., 1] * d[..., 1]
    c = p[..., 0] ** 2 + p[..., 1] ** 2 - r * r
    near, far = _smallest_root(jnp.maximum(a, 1e-12), b, c)

    def keep(t):
        return jnp.where((t < _INF) & (jnp.abs(p[..., 2] + t * d[..., 2]) <= h), t, _INF)

    return keep(near), keep(far)


def _hit_capsule(p, d, size):
    r, h = size[..., 0], size[..., 1]
    near, far = _side(p, d, r, h)
    hits = [_first_hit(near, far)]
    for sign in (-1.0, 1.0):
        offset = jnp.stack([jnp.zeros_like(h), jnp.zeros_like(h), sign * h], -1)
        hits.append(_hit_sphere(p - offset, d, size))
    return jnp.minimum(jnp.minimum(hits[0], hits[1]), hits[2])


def _hit_cylinder(p, d, size):
    r, h = size[..., 0], size[..., 1]
    near, far = _side(p, d, r, h)
    best = _first_hit(near, far)
    for sign in (-1.0, 1.0):
        t = _safe_div(sign * h - p[..., 2], d[..., 2])
        x = p[..., :2] + t[..., None] * d[..., :2]
        ok = (t >= 0) & (jnp.sum(x * x, -1) <= r * r)
        best = jnp.minimum(best, jnp.where(ok, t, _INF))
    return best


def _hit_box(p, d, size):
    t0 = _safe_div(-size - p, d)
    t1 = _safe_div(size - p, d)
    near = jnp.max(jnp.minimum(t0, t1), -1)
    far = jnp.min(jnp.maximum(t0, t1), -1)
    return jnp.where(near <= far, _first_hit(near, far), _INF)


_HIT = {
    PLANE: _hit_plane,
    SPHERE: _hit_sphere,
    CAPSULE: _hit_capsule,
    ELLIPSOID: _hit_ellipsoid,
    CYLINDER: _hit_cylinder,
    BOX: _hit_box,
}


def _normal_local(kind: jax.Array, x: jax.Array, size: jax.Array) -> jax.Array:
    """Outward normal (unnormalised) at the local hit point ``x`` of a geom of type ``kind``."""
    r, h = size[..., 0:1], size[..., 1:2]
    zero = jnp.zeros_like(x[..., :1])
    up = jnp.concatenate([zero, zero, jnp.ones_like(zero)], -1)
    axis = jnp.concatenate([zero, zero, jnp.clip(x[..., 2:3], -h, h)], -1)
    radial = jnp.concatenate([x[..., :2], zero], -1)
    cap = jnp.concatenate([zero, zero, jnp.sign(x[..., 2:3])], -1)
    on_cap = jnp.abs(x[..., 2:3]) - h > jnp.linalg.norm(x[..., :2], axis=-1, keepdims=True) - r
    scaled = jnp.abs(x) / jnp.maximum(size, 1e-9)
    face = jnp.argmax(scaled, -1)
    box = jax.nn.one_hot(face, 3, dtype=x.dtype) * jnp.sign(x)
    normals = {
        PLANE: up,
        SPHERE: x,
        CAPSULE: x - axis,
        ELLIPSOID: x / jnp.maximum(size, 1e-9) ** 2,
        CYLINDER: jnp.where(on_cap, cap, radial),
        BOX: box,
    }
    out = up
    for k, n in normals.items():
        out = jnp.where((kind == k)[..., None], n, out)
    return out


class Scene(NamedTuple):
    """Static (host) description of a model's visible geoms and camera.

    Attributes:
      geoms: visible geom ids, grouped by type (``{type: int array}``).
      kind: ``[G]`` geom types.
      size: ``[G, 3]`` geom sizes.
      rgb: ``[G, 3]`` base colours.
      plane_texture: ``{geom: (texture [h, w, 3] float, repeat [2], uniform)}``.
      sky: ``[2, 3]`` colours at the zenith and the nadir.
      lights: ``[L, 3]`` directions of directional lights (plus the headlight's, added per ray).
      diffuse: ``[L]`` their diffuse intensities.
      ambient: total ambient intensity.
      headlight: the headlight's diffuse intensity.
      fovy: vertical field of view (degrees).
      camera: camera id.
    """

    geoms: dict
    kind: np.ndarray
    size: np.ndarray
    rgb: np.ndarray
    plane_texture: dict
    sky: np.ndarray
    lights: np.ndarray
    diffuse: np.ndarray
    ambient: float
    headlight: float
    fovy: float
    camera: int


def _texture(m: mujoco.MjModel, tex: int) -> np.ndarray:
    w, h, c = int(m.tex_width[tex]), int(m.tex_height[tex]), int(m.tex_nchannel[tex])
    adr = int(m.tex_adr[tex])
    data = np.asarray(m.tex_data[adr : adr + w * h * c], np.float32).reshape(h, w, c) / 255.0
    return data[..., :3] if c >= 3 else np.repeat(data[..., :1], 3, -1)


def _material_texture(m: mujoco.MjModel, mat: int) -> int:
    ids = np.atleast_1d(m.mat_texid[mat])
    used = ids[ids >= 0]
    return int(used[0]) if used.size else -1


def scene(m: mujoco.MjModel, camera: int | str = 0) -> Scene:
    """Reads the static parts of ``m`` that the ray caster needs.

    Raises:
      ValueError: an unknown camera, or a visible geom type that is not
        supported (meshes, height fields).
    """
    if isinstance(camera, str):
        cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam < 0:
            raise ValueError(f"unknown camera {camera!r}")
    else:
        cam = int(camera)
        if not 0 <= cam < m.ncam:
            raise ValueError(f"camera id {cam} out of range (the model has {m.ncam} cameras)")
    visible = [
        g for g in range(m.ngeom) if m.geom_group[g] in VISIBLE_GROUPS and m.geom_rgba[g, 3] > 0
    ]
    kind = np.asarray(m.geom_type, np.int32)
    bad = sorted({int(kind[g]) for g in visible} - set(SUPPORTED))
    if bad:
        names = [mujoco.mjtGeom(k).name for k in bad]
        raise ValueError(f"the ray caster does not draw geom types {names}")
    rgb = np.asarray(m.geom_rgba[:, :3], np.float32).copy()
    textures = {}
    for g in visible:
        mat = int(m.geom_matid[g])
        if mat < 0:
            continue
        if np.allclose(m.geom_rgba[g], _DEFAULT_RGBA):
            rgb[g] = m.mat_rgba[mat, :3]
        tex = _material_texture(m, mat)
        if kind[g] == PLANE and tex >= 0 and m.tex_type[tex] == mujoco.mjtTexture.mjTEXTURE_2D:
            repeat = np.asarray(m.mat_texrepeat[mat], np.float32)
            textures[g] = (_texture(m, tex) * rgb[g], repeat, bool(m.mat_texuniform[mat]))
    sky = np.zeros((2, 3), np.float32)
    for tex in range(m.ntex):
        if m.tex_type[tex] == mujoco.mjtTexture.mjTEXTURE_SKYBOX:
            image = _texture(m, tex)
            sky = np.stack([image[0].mean(0), image[-1].mean(0)])
    directional = (
        [
            i
            for i in range(m.nlight)
            if int(m.light_type[i]) == int(mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)
        ]
        if hasattr(m, "light_type")
        else [i for i in range(m.nlight) if m.light_directional[i]]
    )
    lights = np.asarray(m.light_dir[directional], np.float32).reshape(-1, 3)
    lights /= np.maximum(np.linalg.norm(lights, axis=-1, keepdims=True), 1e-9)
    diffuse = np.asarray(m.light_diffuse[directional], np.float32).reshape(-1, 3).mean(-1)
    ambient = float(np.mean(m.vis.headlight.ambient)) + float(
        np.asarray(m.light_ambient, np.float32).reshape(-1, 3).mean(-1).sum()
    )
    groups = {}
    for k in SUPPORTED:
        ids = np.asarray([g for g in visible if kind[g] == k], np.int32)
        if ids.size:
            groups[k] = ids
    return Scene(
        geoms=groups,
        kind=kind,
        size=np.asarray(m.geom_size, np.float32),
        rgb=rgb,
        plane_texture=textures,
        sky=sky,
        lights=lights,
        diffuse=diffuse,
        ambient=ambient,
        headlight=float(np.mean(m.vis.headlight.diffuse)),
        fovy=float(m.cam_fovy[cam]),
        camera=cam,
    )


def intersect(
    sc: Scene, geom_xpos: jax.Array, geom_xmat: jax.Array, origin: jax.Array, dirs: jax.Array
):
    """Nearest visible geom along each ray.

    Args:
      sc: ``scene(m)``.
      geom_xpos: ``[G, 3]`` geom positions.
      geom_xmat: ``[G, 3, 3]`` geom frames.
      origin: ``[3]`` the rays' common origin.
      dirs: ``[..., 3]`` unit directions.

    Returns:
      ``(dist [...], geom [...])``: distance to the first hit (inf for none)
      and the geom id (-1 for none).
    """
    best_t = jnp.full(dirs.shape[:-1], _INF)
    best_g = jnp.full(dirs.shape[:-1], -1, jnp.int32)
    for k, ids in sc.geoms.items():
        rot = geom_xmat[ids]  # [g, 3, 3]
        p = jnp.einsum("gji,gj->gi", rot, origin - geom_xpos[ids])  # R^T (o - x)
        d = jnp.einsum("gji,...j->...gi", rot, dirs)
        t = _HIT[k](p, d, jnp.asarray(sc.size[ids]))  # [..., g]
        arg = jnp.argmin(t, -1)
        t_min = jnp.min(t, -1)
        closer = t_min < best_t
        best_t = jnp.where(closer, t_min, best_t)
        best_g = jnp.where(closer, jnp.asarray(ids)[arg], best_g)
    return best_t, best_g


def shade(
    sc: Scene, geom_xpos, geom_xmat, origin, dirs, dist, geom, pixel_angle: float = 0.0
) -> jax.Array:
    """Colours ``[..., 3]`` in [0, 1] of the hits ``(dist, geom)`` (see the module docstring).

    ``pixel_angle`` (radians per pixel) sets how far away a plane's texture
    fades to its mean colour; 0 never fades it.
    """
    hit = geom >= 0
    g = jnp.maximum(geom, 0)
    dist = jnp.where(hit, dist, 0.0)
    point = origin + dist[..., None] * dirs
    rot = geom_xmat[g]  # [..., 3, 3]
    local = jnp.einsum("...ji,...j->...i", rot, point - geom_xpos[g])
    kind = jnp.asarray(sc.kind)[g]
    size = jnp.asarray(sc.size)[g]
    normal = jnp.einsum("...ij,...j->...i", rot, _normal_local(kind, local, size))
    normal /= jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-9)
    facing = jnp.sum(normal * dirs, -1, keepdims=True) > 0
    normal = jnp.where(facing, -normal, normal)
    base = jnp.asarray(sc.rgb)[g]
    for plane, (texture, repeat, uniform) in sc.plane_texture.items():
        h, w = texture.shape[:2]
        extent = 1.0 if uniform else 2 * sc.size[plane, :2]
        uv = local[..., :2] * jnp.asarray(repeat / np.maximum(extent, 1e-9))
        col = jnp.floor((uv[..., 0] - jnp.floor(uv[..., 0])) * w).astype(jnp.int32)
        row = jnp.floor((uv[..., 1] - jnp.floor(uv[..., 1])) * h).astype(jnp.int32)
        texel = jnp.asarray(texture)[jnp.clip(row, 0, h - 1), jnp.clip(col, 0, w - 1)]
        # Filtering in place of mipmaps: where a pixel's footprint on the plane
        # (distance x pixel angle / |cos incidence|) exceeds half a texture
        # period, the texture fades to its mean colour (no moire far away).
        period = float(np.min(np.where(uniform, 1.0, extent) / np.maximum(repeat, 1e-9)))
        cosine = jnp.maximum(jnp.abs(jnp.sum(normal * dirs, -1)), 1e-3)
        footprint = dist * pixel_angle / cosine
        fade = jnp.clip(2 * footprint / period - 0.5, 0.0, 1.0)[..., None]
        texel = (1 - fade) * texel + fade * jnp.asarray(texture.mean((0, 1)))
        base = jnp.where((geom == plane)[..., None], texel, base)
    light = sc.ambient + sc.headlight * jnp.maximum(0.0, -jnp.sum(normal * dirs, -1))
    for direction, intensity in zip(sc.lights, sc.diffuse, strict=True):
        light = light + intensity * jnp.maximum(0.0, -normal @ jnp.asarray(direction))
    colour = jnp.clip(base * light[..., None], 0.0, 1.0)
    up = 0.5 + 0.5 * dirs[..., 2:3]
    sky = up * jnp.asarray(sc.sky[0]) + (1 - up) * jnp.asarray(sc.sky[1])
    return jnp.where(hit[..., None], colour, sky)


def make_raycaster(
    m: mujoco.MjModel, width: int = 64, height: int = 64, camera: int | str = 0
) -> Callable[[Any], jax.Array]:
    """``render(data) -> uint8 [height, width, 3]`` through camera ``camera`` of ``m``.

    Args:
      m: the MuJoCo model (``env.sys.mj_model`` for brax's MJX tasks).
      width: image width.
      height: image height.
      camera: camera id or name (the brax tasks' ``track`` camera is id 0).

    Returns:
      A pure function of an ``mjx.Data``-like object (see the module docstring).
    """
    sc = scene(m, camera)

    def render(data: Any) -> jax.Array:
        origin, dirs, dist, geom = _cast(sc, data, width, height)
        angle = 2 * np.tan(np.deg2rad(sc.fovy) / 2) / height
        colour = shade(sc, data.geom_xpos, data.geom_xmat, origin, dirs, dist, geom, angle)
        return jnp.round(colour * 255).astype(jnp.uint8)

    return render


def depth_and_ids(
    m: mujoco.MjModel, data: Any, width: int = 64, height: int = 64, camera: int | str = 0
):
    """``(dist [H, W], geom [H, W])`` of the camera's rays (inf / -1 for none): the raw ray cast."""
    _, _, dist, geom = _cast(scene(m, camera), data, width, height)
    return dist, geom


def _cast(sc: Scene, data: Any, width: int, height: int):
    """The camera's rays and their first hits: ``(origin, dirs, dist, geom)``."""
    origin = data.cam_xpos[sc.camera]
    dirs = camera_rays(data.cam_xmat[sc.camera], sc.fovy, width, height)
    dist, geom = intersect(sc, data.geom_xpos, data.geom_xmat, origin, dirs)
    return origin, dirs, dist, geom
