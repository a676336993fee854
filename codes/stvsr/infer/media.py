"""Frames in and out as streams: a video file (PyAV) or a folder of images, one frame at a time.

Why PyAV and not OpenCV's ``VideoCapture``/``VideoWriter`` (both can decode and encode frame by frame):

- audio: PyAV demuxes and muxes packets, so the input's audio track is copied into the output unchanged
  (no re-encoding); ``cv2.VideoWriter`` writes video only;
- frame rates are exact fractions (``30000/1001`` doubled is ``60000/1001``), not floats;
- colour: the input's primaries, transfer, matrix and range are read and written back (the RGB <-> YUV
  conversion uses the input's matrix and range), and the codec, CRF and pixel format are chosen explicitly;
- it is the maintained Python binding of FFmpeg's libraries (wheels bundle FFmpeg, regular releases), while
  OpenCV's video I/O depends on how the wheel was built and exposes few of these controls.

OpenCV stays in use for image files (``stvsr.data.io``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from stvsr.atomic import commit, discard, temporary_sibling
from stvsr.data.io import IMAGE_EXTENSIONS, DataError, image_shape, list_images, read_image, write_image
from stvsr.errors import StvsrError
from stvsr.outputs import OutputError, check_writable_folder, describe_write_error

logger = logging.getLogger(__name__)

__all__ = [
    "VIDEO_EXTENSIONS",
    "FolderSink",
    "FolderSource",
    "InferError",
    "MediaInfo",
    "VideoSink",
    "VideoSource",
    "is_video_path",
    "open_source",
]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
DEFAULT_FOLDER_FPS = Fraction(25)
UNSPECIFIED = 2  # AVCOL_PRI/TRC/SPC_UNSPECIFIED
BT601 = 5  # AVCOL_SPC_BT470BG: the BT.601 matrix, swscale's default
LIMITED = 1  # AVCOL_RANGE_MPEG ("tv")
# AVColorSpace (what streams and frames carry) -> the swscale matrix used to convert RGB to YUV
SWS_COLORSPACE = {1: "itu709", 4: "fcc", 5: "itu601", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}


class InferError(StvsrError, RuntimeError):
    """A user-fixable problem (input, output, model, options); the message says what and what to do."""


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class MediaInfo:
    """What is known about a stream of frames (input or output)."""

    path: str
    kind: str  # 'video' or 'frames'
    width: int = 0
    height: int = 0
    rate: Fraction = DEFAULT_FOLDER_FPS
    frames: int | None = None  # None: not known before decoding
    codec: str = ""
    color: dict[str, int] = field(default_factory=dict)  # primaries, trc, colorspace, range (FFmpeg values)
    audio: str = ""  # the audio codec, '' when there is none
    start_time: float = 0.0  # seconds, of the first video frame

    def describe(self, frames: int | None = None) -> str:
        n = self.frames if frames is None else frames
        rate = f"{float(self.rate):.3f}".rstrip("0").rstrip(".")
        exact = f" ({self.rate.numerator}/{self.rate.denominator})" if self.rate.denominator != 1 else ""
        parts = [f"{n if n is not None else '?'} frames", f"{self.width}x{self.height}", f"{rate} fps{exact}"]
        if n:
            parts.append(f"{n / float(self.rate):.2f} s")
        if self.codec:
            parts.append(self.codec)
        return ", ".join(parts)


def _av():
    try:
        import av  # video I/O: loaded when a video file is read or written, not for folders of frames
    except ImportError as exc:  # pragma: no cover - av is a dependency
        raise InferError(f"video files need PyAV (`pip install av`): {exc}") from None
    return av


# ---------------------------------------------------------------------------------------------- sources


class FolderSource:
    """A folder of images (naturally sorted, ``stvsr.data.io``), read one at a time."""

    def __init__(self, folder: str | Path, fps: Fraction | None = None) -> None:

        try:
            self.paths = list_images(folder)
        except DataError as exc:
            raise InferError(str(exc)) from None
        if not self.paths:
            raise InferError(f"input folder {folder} holds no images ({', '.join(_image_exts())})")
        try:
            h, w, _ = image_shape(self.paths[0])
        except DataError as exc:
            raise InferError(str(exc)) from None
        self.info = MediaInfo(str(folder), "frames", w, h, Fraction(fps or DEFAULT_FOLDER_FPS), len(self.paths))

    def frames(self, audio: Callable[[Any], None] | None = None) -> Iterator[np.ndarray]:

        for path in self.paths:
            try:
                yield read_image(path)
            except DataError as exc:
                raise InferError(str(exc)) from None

    def close(self) -> None:
        pass


def _image_exts() -> tuple[str, ...]:

    return IMAGE_EXTENSIONS


class VideoSource:
    """The first video stream of a file, decoded frame by frame to uint8 RGB; audio packets (of the first audio
    stream) are handed, undecoded, to the ``audio`` callback of :meth:`frames` as they are demuxed."""

    def __init__(self, path: str | Path, fps: Fraction | None = None) -> None:
        av = _av()
        self.path = str(path)
        try:
            self.container = av.open(self.path)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise InferError(f"input {path} cannot be read as a video ({exc}): check the file") from None
        not_video = _not_a_video(self.container)
        if not_video:
            self.container.close()
            raise InferError(f"input {path} is not a video: {not_video}")
        if not self.container.streams.video:
            self.container.close()
            raise InferError(f"input {path} has no video stream")
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.audio_stream = self.container.streams.audio[0] if self.container.streams.audio else None
        cc = self.video.codec_context
        rate = fps or self.video.average_rate or self.video.guessed_rate or self.video.base_rate
        if not rate:
            logger.warning("%s: no frame rate in the container; assuming %s fps (set --fps)", path, DEFAULT_FOLDER_FPS)
            rate = DEFAULT_FOLDER_FPS
        start = self.video.start_time
        self.info = MediaInfo(
            self.path,
            "video",
            int(cc.width),
            int(cc.height),
            Fraction(rate),
            int(self.video.frames) or None,
            cc.name,
            {
                "primaries": int(cc.color_primaries),
                "trc": int(cc.color_trc),
                "colorspace": int(cc.colorspace),
                "range": int(cc.color_range),
            },
            self.audio_stream.codec_context.name if self.audio_stream is not None else "",
            float(start * self.video.time_base) if start is not None and self.video.time_base else 0.0,
        )
        if not self.info.width or not self.info.height:
            raise InferError(f"input {path}: the video stream has no frame size (corrupt or unsupported)")

    def frames(self, audio: Callable[[Any], None] | None = None) -> Iterator[np.ndarray]:
        av = _av()
        streams = [self.video] + ([self.audio_stream] if audio is not None and self.audio_stream is not None else [])
        count = 0
        try:
            for packet in self.container.demux(*streams):
                if packet.stream.index != self.video.index:
                    if packet.dts is not None:
                        audio(packet)
                    continue
                for frame in packet.decode():
                    # the input's own matrix and range (to_ndarray's default would assume limited range)
                    yield frame.to_ndarray(format="rgb24", src_color_range=int(frame.color_range) or None)
                    count += 1
        except av.FFmpegError as exc:
            raise InferError(f"input {self.path}: decoding failed after {count} frames ({exc})") from None

    def close(self) -> None:
        self.container.close()


# FFmpeg demuxers that it picks by probing content, which make "video" of files that are not: text shown as a
# terminal would (tty: ansi/ASCII, .txt, .nfo; bin/adf/idf/xbin: text-mode art) and single images (image2, *_pipe)
TEXT_DEMUXERS = ("tty", "bin", "adf", "idf", "xbin")
TEXT_CODECS = ("ansi", "bintext", "xbin", "idf")


def _not_a_video(container: Any) -> str:
    """Why ``container`` (an opened PyAV input) is not a real video stream; '' when it is one."""
    names = set(str(container.format.name).split(","))
    long_name = container.format.long_name
    if names & set(TEXT_DEMUXERS):
        videos = ", ".join(VIDEO_EXTENSIONS)
        return f"FFmpeg reads it as text ({long_name}); give a video file ({videos}) or a folder of frames"
    if "image2" in names or "image2pipe" in names or any(n.endswith("_pipe") for n in names):
        return f"it is a single image ({long_name}); give a folder of frames (--fps sets their rate) or a video file"
    codecs = {s.codec_context.name for s in container.streams.video}
    if codecs & set(TEXT_CODECS):
        return f"its video stream is rendered text ({', '.join(sorted(codecs))}); give a real video file"
    return ""


def open_source(path: str | Path, fps: Fraction | None = None) -> FolderSource | VideoSource:
    """A folder of images or a video file; every problem is an :class:`InferError` naming the path."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InferError(f"input {p} does not exist")
    if p.is_dir():
        return FolderSource(p, fps)
    if not os.access(p, os.R_OK):
        raise InferError(f"input {p} is not readable (permissions)")
    return VideoSource(p, fps)


# ------------------------------------------------------------------------------------------------ sinks


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse, before any computation, an output that exists (without ``overwrite``) or cannot be written (a
    read-only or full file system: a small probe file is written and removed)."""
    p = Path(path).expanduser()
    folder = p if not is_video_path(p) else p.parent
    if is_video_path(p):
        if p.is_dir():
            raise InferError(f"output {p} is a folder: give a file name such as {p / 'out.mp4'}")
        if p.exists() and not overwrite:
            raise InferError(f"output {p} exists: remove it or pass --overwrite")
    else:
        if p.exists() and not p.is_dir():
            raise InferError(
                f"output {p}: not a folder and not a video name ({', '.join(VIDEO_EXTENSIONS)}): give a folder "
                f"for PNG frames or a video file name"
            )
        if p.is_dir() and not overwrite and any(q.suffix.lower() == ".png" for q in p.iterdir()):
            raise InferError(f"output folder {p} already holds PNG frames: empty it or pass --overwrite")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InferError(f"output {p}: cannot create folder {folder} ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InferError(f"output {p}: folder {folder} is not writable")
    try:
        check_writable_folder(folder, "output")
    except OutputError as exc:
        raise InferError(str(exc)) from None
    return p


class FolderSink:
    """PNG frames ``000000.png``, ``000001.png``, ... in a folder, each written atomically."""

    def __init__(self, folder: str | Path, info: MediaInfo) -> None:
        self.folder = Path(folder)
        self.info = info
        self.count = 0
        self.audio = None

    def write(self, rgb: np.ndarray) -> None:

        path = self.folder / f"{self.count:06d}.png"
        try:
            write_image(path, rgb)  # atomic: a failed or interrupted write leaves no temporary
        except OSError as exc:
            kept = f"the {self.count} frames before it are kept in {self.folder}"
            raise InferError(f"output: {describe_write_error(exc, path)}; {kept}") from None
        self.count += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def default_codec(path: Path) -> str:
    av = _av()
    wanted = ["libvpx-vp9"] if path.suffix.lower() == ".webm" else ["libx264", "h264", "mpeg4"]
    for name in wanted:
        if name in av.codecs_available:
            return name
    raise InferError(f"no encoder for {path.suffix} in this PyAV build: choose one with --codec")


class VideoSink:
    """Encode uint8 RGB frames into a video file, written to a temporary name and renamed on :meth:`close`.

    ``info`` gives the output size, rate and colour tags (copied from the input where it had them); ``audio``
    is an input audio stream to copy (packets passed to :meth:`mux_audio`), or None.
    """

    def __init__(
        self,
        path: str | Path,
        info: MediaInfo,
        codec: str | None = None,
        crf: int | None = 18,
        pix_fmt: str = "yuv420p",
        audio: Any = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        av = _av()
        self.path = Path(path)
        self.info = info
        codec = codec or default_codec(self.path)
        if codec not in av.codecs_available:
            raise InferError(f"--codec {codec}: not available in this PyAV/FFmpeg build")
        self.container = None
        self.tmp = temporary_sibling(self.path)
        try:
            self._setup(av, info, codec, crf, pix_fmt, audio, metadata)
        except BaseException:  # an error or a stop signal while setting up: no temporary is left
            self.abort()
            raise
        self.count = 0

    def _setup(
        self,
        av: Any,
        info: MediaInfo,
        codec: str,
        crf: int | None,
        pix_fmt: str,
        audio: Any,
        metadata: dict[str, str] | None,
    ) -> None:
        try:
            self.container = av.open(str(self.tmp), "w")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise InferError(f"output {self.path}: cannot be opened for writing ({exc})") from None
        if codec not in self.container.supported_codecs:
            raise InferError(f"--codec {codec} cannot be stored in a {self.path.suffix} file: choose another codec")
        try:
            self.stream = self.container.add_stream(codec, rate=info.rate)
            self.stream.width, self.stream.height = info.width, info.height
            self.stream.pix_fmt = pix_fmt
            if crf is not None and codec in ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"):
                self.stream.options = {"crf": str(crf), **({"b:v": "0"} if codec == "libvpx-vp9" else {})}
            cc = self.stream.codec_context
            color = info.color
            for key, attr in (("primaries", "color_primaries"), ("trc", "color_trc"), ("colorspace", "colorspace")):
                if color.get(key, UNSPECIFIED) not in (0, UNSPECIFIED):
                    setattr(cc, attr, color[key])
            if color.get("colorspace", UNSPECIFIED) in (0, UNSPECIFIED):
                # no matrix in the input: RGB -> YUV uses swscale's default (BT.601); say so, or players would
                # guess BT.709 for the HD output
                cc.colorspace = BT601
            cc.color_range = color.get("range") or LIMITED
            self.audio = None
            if audio is not None and audio.codec_context.name not in self.container.supported_codecs:
                logger.warning(
                    "audio track not copied: a %s file cannot hold %s", self.path.suffix, audio.codec_context.name
                )
            elif audio is not None:
                try:
                    self.audio = self.container.add_stream_from_template(audio)
                except (av.FFmpegError, ValueError) as exc:
                    logger.warning("audio track not copied: %s cannot hold it (%s)", self.path.suffix, exc)
            for key, value in (metadata or {}).items():
                if key.lower() not in ("encoder", "major_brand", "minor_version", "compatible_brands"):
                    self.container.metadata[key] = value
        except (av.FFmpegError, ValueError, TypeError) as exc:
            raise InferError(f"output {self.path}: cannot set up the {codec} encoder ({exc})") from None
        self.dst_colorspace = SWS_COLORSPACE.get(color.get("colorspace", UNSPECIFIED), "itu601")
        self.dst_range = "JPEG" if color.get("range") == 2 else "MPEG"
        self.first_pts = round(info.start_time * info.rate) if info.start_time > 0 else 0

    def write(self, rgb: np.ndarray) -> None:
        av = _av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(
            format=self.stream.pix_fmt, dst_colorspace=self.dst_colorspace, dst_color_range=self.dst_range
        )
        frame.pts = self.first_pts + self.count
        self.count += 1
        self._mux(self.stream.encode, frame)

    def mux_audio(self, packet: Any) -> None:
        if self.audio is not None:
            packet.stream = self.audio
            self._mux(lambda p: [p], packet)

    def _mux(self, encode: Callable[[Any], Any], item: Any) -> None:
        av = _av()
        try:
            for packet in encode(item):
                self.container.mux(packet)
        except av.FFmpegError as exc:
            raise self._write_error(exc) from None

    def _write_error(self, exc: Exception) -> InferError:
        """A failed write as one message: a full disk names the file and the free space."""
        if isinstance(exc, OSError) and exc.errno:
            reason = describe_write_error(exc, self.path)
            return InferError(f"output: {reason} (after {self.count} frames; the partial video was removed)")
        return InferError(f"output {self.path}: writing failed after {self.count} frames ({exc})")

    def close(self) -> None:
        av = _av()
        self._mux(self.stream.encode, None)
        try:
            self.container.close()  # writes the index (an MP4's moov): the disk may fill here too
            commit(self.tmp, self.path)
        except (av.FFmpegError, OSError) as exc:
            raise self._write_error(exc) from None

    def abort(self) -> None:
        """Close and delete the temporary file (after an error or a stop signal); the final name is untouched."""
        if self.container is not None:
            try:
                self.container.close()
            except Exception as exc:  # noqa: BLE001 - cleaning up after another error, which is the one reported
                logger.debug("closing the partial output %s: %s", self.tmp, exc)
        discard(self.tmp)
