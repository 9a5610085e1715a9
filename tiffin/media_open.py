"""Media files opened as data: a regular file, one of the containers tiffin reads, nothing else.

FFmpeg picks a demuxer from a file's content, and some demuxers open the files or URLs a file
names: an HLS playlist (`#EXTM3U`), a concat script, an image-sequence pattern, subtitles with
includes. An upload, a CSV row or a `tiffin predict` argument holding such text would make
tiffin read a file of the server's (and answer with its transcript or labels, or tell whether
it exists). Every open of media goes through `open_container`, which lets FFmpeg use only the
demuxers of `DEMUXERS` (self-contained audio/video containers) and only the `file` protocol,
on a path given as `file:` so that no part of a name is read as a protocol; anything that is not
a regular file (a FIFO would block forever, a device never ends) is refused before it is opened.
Torch-free: serving imports it. Exercised by every decode (`tiffin predict`, training, serving).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tiffin.errors import MediaError

# FFmpeg demuxer names (av_match_list matches any name of a demuxer's comma-separated list):
# containers that carry their own streams. mov's external data references stay off (FFmpeg's
# default, enable_drefs=0). Not here, so never opened: hls, concat, image2 and every image or
# GIF demuxer, subtitles, tee/data/lavfi-style pseudo formats.
DEMUXERS = (
    "mov",  # mp4, m4v, m4a, mov, 3gp
    "matroska",  # mkv, webm
    "avi", "mpegts", "mpeg", "flv", "asf",  # ts/m2ts, mpg, flv, wmv/wma
    "ogg",  # ogv, ogg vorbis, opus
    "wav", "w64", "flac", "mp3", "aac", "aiff",
    "h264", "hevc", "m4v", "mpegvideo",  # raw elementary streams
)

_OPTIONS = {"format_whitelist": ",".join(DEMUXERS), "protocol_whitelist": "file"}


def regular_file(path: str | Path) -> str:
    """`path` as a string if it is a regular, non-empty file.

    Raises:
        MediaError: missing, not a regular file (a FIFO, device or folder), or empty.
    """
    path = str(path)
    try:
        mode = os.stat(path)
    except OSError:
        raise MediaError(path, "no such file") from None
    if not stat.S_ISREG(mode.st_mode):
        raise MediaError(path, "is not a regular file (a pipe, device or folder); give a media file")
    if mode.st_size == 0:
        raise MediaError(path, "is empty (0 bytes)")
    return path


def open_container(path: str | Path):
    """An av InputContainer over a regular media file, opened with only the demuxers of DEMUXERS.

    Raises:
        MediaError: not a regular file, or not one of the containers tiffin reads.
        av.FFmpegError: FFmpeg's own errors on a broken file of an allowed container.
    """
    import av

    path = regular_file(path)
    try:
        return av.open("file:" + os.path.abspath(path), container_options=dict(_OPTIONS))
    except av.error.ArgumentError:
        # what FFmpeg answers for a demuxer off the list (EINVAL)
        raise MediaError(path, "is not an audio or video container tiffin reads (playlists, concat scripts, "
                               "images and subtitles are refused); give mp4, mkv, webm, avi, mov, wav, flac, mp3, "
                               "ogg or m4a") from None
