"""The config sections of the data stages: the source, validation, preprocessing, faces."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from visionops.core.config.sections import _Section


class DataConfig(_Section):
    source: Literal["digits", "imagefolder", "csv", "urls"] = "digits"
    path: str | None = Field(
        None,
        description="Image folder (imagefolder), manifest CSV (csv: path,label or "
        "path,name,int_label) or URL manifest (urls: name,url[,x1,y1,x2,y2][,md5]); unused for digits.",
    )
    image_size: int = Field(16, ge=4, le=1024, description="Square side length after resizing.")
    channels: Literal[1, 3] = 1
    max_pixels: int = Field(
        40_000_000,
        ge=1,
        # Past a gigapixel one image alone is several GiB decoded: no setting should allow that.
        le=1_000_000_000,
        description="Images with more pixels are rejected undecoded (decompression-bomb guard).",
    )
    download_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=600.0,
        description="Deadline for one download as a whole (every redirect and read of one try).",
    )
    allow_private_hosts: list[str] = Field(
        default_factory=list,
        description="URL ingest reaches only public addresses; host names or networks (CIDR) "
        "listed here may be reached too, e.g. your own intranet image server. Empty by default.",
    )
    download_retries: int = Field(
        2, ge=0, le=10, description="Retries after the first try, with backoff."
    )
    download_workers: int = Field(4, ge=1, le=32)
    slices: dict[str, str] = Field(
        default_factory=dict,
        description="Slices of the data read from each image's path: name -> a regular "
        "expression whose first group is the value (e.g. lighting: '(center|left|right)light'; "
        "'other' where it does not match). A CSV's slice_<name> columns are slices too. The "
        "evaluation reports each slice's values and the gate's per-class rules judge them.",
    )
    ingest_chunk_files: int = Field(
        5_000,
        ge=1,
        description="Files one ingest_chunk task decodes and hashes: train_pipeline maps its "
        "ingest over chunks of this size, which any worker of the deployment can take.",
    )
    max_download_bytes: int = Field(20_000_000, ge=1)
    min_download_side: int = Field(
        16, ge=1, description="Downloaded images smaller than this are placeholders."
    )
    placeholder_repeats: int = Field(
        3, ge=2, description="Same content at this many URLs = placeholder."
    )
    max_rejected_fraction: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="URL rows rejected above this fraction fail the ingest stage.",
    )

    @field_validator("slices")
    @classmethod
    def _slice_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for name, pattern in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"slice name {name!r}: lower-case letters, digits and _ only")
            try:
                groups = re.compile(pattern).groups
            except re.error as exc:
                raise ValueError(f"slice {name!r}: {pattern!r} is no regular expression ({exc})")
            if groups < 1:
                raise ValueError(f"slice {name!r}: {pattern!r} needs a group (...) for the value")
        return value

    @model_validator(mode="after")
    def _path_required(self) -> DataConfig:
        if self.source != "digits" and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        return self


Severity = Literal["error", "warning"]


class ValidateConfig(_Section):
    """The suite's checks, and the one policy for minority problems (``data.quality``): below its
    threshold a problem's images or classes are quarantined and reported; above it the run stops.
    A threshold of 0 makes the problem fatal."""

    min_images_per_class: int = Field(
        10, ge=1, description="Usable images a class needs; a smaller class is dropped."
    )
    # A tenth of the images under two labels at once means the labelling itself is in doubt: below,
    # the copies are a few labelling slips to set aside; above, the result could not be trusted.
    max_label_conflict_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Largest share of images with the same content as an image of another label "
        "(every copy quarantined) before the run stops.",
    )
    # A model missing a fifth of its classes is a different model from the one asked for: past that
    # the run stops rather than ship it. Never all: a model needs classes left.
    max_dropped_class_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Largest share of classes dropped for too few usable images before the run "
        "stops (never all of them).",
    )
    # Photos from the wild include group shots, profiles and blur; when more than about a third have
    # no usable face, the source or the faces.* settings are wrong, not a few photos.
    max_rejected_photo_fraction: float = Field(
        0.3,
        ge=0.0,
        lt=1.0,
        description="Face use: largest share of photos without exactly one usable face before the "
        "run stops.",
    )
    classes: list[str] | None = Field(
        None, description="Declared class set; other labels are errors."
    )
    modes: list[str] | None = Field(None, description="Accepted PIL modes (e.g. [L]); None = any.")
    convert_modes: bool = Field(
        True, description="Other modes are converted (warning) instead of errors."
    )
    min_side: int = Field(1, ge=1)
    max_side: int = Field(10_000, ge=1)
    max_imbalance: float = Field(10.0, ge=1.0, description="Largest/smallest class size ratio.")
    imbalance_severity: Severity = "warning"
    label_variant_severity: Severity = Field(
        "warning",
        description="Classes whose labels differ only in case or Unicode form (``cat`` and "
        "``Cat``): probably one class written two ways. Surrounding whitespace is removed from "
        "every label by every source, so ``cat `` is ``cat``.",
    )
    duplicate_severity: Severity = Field(
        "warning",
        description="Exact copies (same sha256) with the same "
        "label: one is kept, the others dropped and listed. Copies with "
        "different labels are label conflicts (max_label_conflict_fraction).",
    )
    near_duplicate_bits: int = Field(
        4,
        ge=0,
        le=64,
        description="dHash Hamming distance at or below "
        "which two images may be near-copies (grouped by the split).",
    )
    near_duplicate_max_diff: float = Field(
        5.0,
        ge=0.0,
        le=255.0,
        description="Mean absolute difference "
        "(0-255) of 16x16 grey thumbnails confirming a dHash match.",
    )
    leakage_severity: Severity = Field(
        "error",
        description="A held-out image near-copying a train image "
        "under a user-given split (a `split` column); planned splits keep "
        "near-copies together and only report the links they had to cut.",
    )
    schema_change_severity: Severity = "warning"
    max_drift_psi: float = Field(
        0.25, gt=0.0, description="PSI per feature vs the champion's data."
    )
    drift_severity: Severity = "warning"


class PreprocessConfig(_Section):
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    seed: int = 42
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes decoding images: inspecting and hashing them at ingest, "
        "resizing them at preprocess.",
    )
    max_group_fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Largest share of its class a near-copy group may hold; larger "
        "groups (chains of near-copies) are cut into contiguous pieces. null = the smaller of val_fraction "
        "and test_fraction, the largest bound that still lets every class reach train, val and test.",
    )


class FacesConfig(_Section):
    """Face-recognition use: keep photos with exactly one usable face, align it with dlib's 5 landmarks."""

    enabled: bool = False
    detector: Literal["dlib", "haar"] = Field(
        "dlib",
        description="dlib: HOG, then the CNN (MMOD) detector "
        "when HOG finds nothing; haar: OpenCV's Haar cascade.",
    )
    upsample: int = Field(
        1,
        ge=0,
        le=3,
        description="dlib HOG: times the photo is doubled before searching "
        "(1 finds faces down to ~40 px).",
    )
    min_score: float = Field(
        0.5,
        ge=-1.0,
        le=3.0,
        description="dlib HOG: beside the strongest face, a "
        "detection counts as another face (several faces: rejected) only from this score.",
    )
    cnn_fallback: bool = Field(
        True,
        description="dlib: run the CNN detector on photos where HOG finds no face "
        "(faces that fill the frame); ~20x slower than HOG, only on those photos.",
    )
    cnn_upsample: int = Field(
        0, ge=0, le=2, description="dlib CNN fallback: times the photo is doubled."
    )
    detect_max_side: int = Field(
        1600,
        ge=0,
        description="dlib: larger photos are searched shrunk to this "
        "longest side (0: never); landmarks and chips use the full photo.",
    )
    # Small photos (the ORL layout: 92x112, the face filling the frame) are searched enlarged: both
    # dlib detectors have a smallest face of ~80 px (halved per upsampling), and HOG misses many faces
    # that fill the frame, which leaves them to the CNN. 200 puts a face filling half a photo's
    # shorter side at 100 px, above the CNN's ~80 px, and lets HOG (upsample 1) find faces down to a
    # fifth of that side. Photos at least this large are searched as before, at no extra cost.
    detect_min_side: int = Field(
        200,
        ge=0,
        description="dlib: photos whose shorter side is below this are searched enlarged to it "
        "(0: never); landmarks and chips use the photo itself.",
    )
    # A face is too small when the chip must enlarge it more than max_upscale: with the default chip
    # (150, margin 0.25) the face spans ~100 px of it, so 3 keeps faces from 34 px across, about the
    # 32x32 px often reported as the least a face needs for recognition; each photo pixel then fills
    # at most 3x3 chip pixels. A factor, not a pixel count, so the rule follows faces.size and margin.
    max_upscale: float = Field(
        3.0,
        ge=1.0,
        le=10.0,
        description="A face is too small when the chip would enlarge it by more than this (the face "
        "spans about size/(1+2*margin) px of the chip). Ignored when min_face is set.",
    )
    min_face: int | None = Field(
        None,
        ge=8,
        description="Explicit smallest face side in photo pixels; null: derived from the chip "
        "(size/(1+2*margin)/max_upscale).",
    )
    margin: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Padding of the aligned chip (dlib.get_face_chip); "
        "0.25 is what dlib's face-embedding ResNet expects.",
    )
    size: int = Field(
        150, ge=16, le=1024, description="Side of the aligned chip; 150 for dlib's face embedding."
    )
    max_roll_deg: float = Field(
        20.0, ge=0.0, le=90.0, description="Photos whose eye line is tilted more are rejected."
    )
    scale_factor: float = Field(1.1, gt=1.0, le=2.0, description="haar only.")
    min_neighbors: int = Field(5, ge=1, description="haar only.")
    balance: Literal["none", "downsample", "weights"] = Field(
        "weights",
        description="weights: sample each person equally often, no photo thrown away; downsample: "
        "cut every person to the smallest count.",
    )

    @model_validator(mode="after")
    def _search_sides(self) -> FacesConfig:
        if self.detect_max_side and self.detect_min_side > self.detect_max_side:
            raise ValueError(
                f"faces.detect_min_side ({self.detect_min_side}) must not exceed "
                f"faces.detect_max_side ({self.detect_max_side})"
            )
        return self
