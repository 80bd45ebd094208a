"""Write one small, real file of each media kind, in pure Python (no tool, no download).

    python sample_inputs/make_media.py [FOLDER]      # default: sample_inputs/media

- ``chart.png``: 64×48 RGB gradient (zlib-compressed PNG).
- ``photo.jpg``: 64×48 baseline JPEG (JFIF, YCbCr 4:4:4; each 8×8 block one colour, so the
  encoder needs only DC coefficients and tiny Huffman tables of its own).
- ``report.pdf``: a 3-page PDF 1.4 with text on every page.
- ``tone.wav``: 1 s of a 440 Hz tone, 8 kHz 16-bit mono PCM.
- ``silence.mp3``: 2 s of MPEG-1 Layer III frames (48 kHz mono, 32 kbit/s CBR) behind an
  ID3v2.3 tag; every frame is silence (no Huffman data), which any decoder plays.
- ``clip.mp4``: 2 s of 64×48 H.264 video (Constrained Baseline, 2 frames/s, every frame an
  IDR picture of I_PCM macroblocks) in an ISO-BMFF file with moov before mdat.

The output is the same bytes on every run, so the files in git can be checked against it.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import wave
import zlib
from pathlib import Path

WIDTH, HEIGHT = 64, 48


def _rgb(x: int, y: int, t: int = 0) -> tuple[int, int, int]:
    """A colourful gradient; ``t`` moves it (video frames)."""
    return ((x * 4 + t * 16) % 256, (y * 5) % 256, (128 + (x + y) * 2 - t * 8) % 256)


# --------------------------------------------------------------------------------- PNG
def make_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(
        b"\x00" + bytes(c for x in range(WIDTH) for c in _rgb(x, y)) for y in range(HEIGHT)
    )
    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# -------------------------------------------------------------------------------- JPEG
class _BitWriter:
    """Most significant bit first, as both JPEG and H.264 want."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.pending = 0  # bits not yet a whole byte
        self.count = 0

    def write(self, value: int, length: int) -> None:
        self.pending = (self.pending << length) | (value & ((1 << length) - 1))
        self.count += length
        while self.count >= 8:
            self.count -= 8
            self.out.append((self.pending >> self.count) & 0xFF)
        self.pending &= (1 << self.count) - 1

    def ue(self, value: int) -> None:  # Exp-Golomb (H.264)
        code = value + 1
        self.write(0, code.bit_length() - 1)
        self.write(code, code.bit_length())

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align(self, fill: int) -> None:
        if self.count:
            pad = 8 - self.count
            self.write((1 << pad) - 1 if fill else 0, pad)

    def to_bytes(self) -> bytes:
        assert self.count == 0, "align first"
        return bytes(self.out)


# DC table: size categories 0..11, all 4-bit codes (0000 … 1011); AC table: only EOB, code "0".
_DC_LENGTHS = [0, 0, 0, 12] + [0] * 12
_AC_LENGTHS = [1] + [0] * 15


def make_jpeg() -> bytes:
    def segment(marker: int, data: bytes) -> bytes:
        return struct.pack(">HH", 0xFF00 | marker, len(data) + 2) + data

    quant = bytes([0]) + bytes([1] * 64)  # table 0, all ones: the DC value is kept exactly
    frame = struct.pack(">BHHB", 8, HEIGHT, WIDTH, 3) + b"".join(
        bytes([cid, 0x11, 0]) for cid in (1, 2, 3))  # three components, no subsampling
    huffman = (bytes([0x00]) + bytes(_DC_LENGTHS) + bytes(range(12))
               + bytes([0x10]) + bytes(_AC_LENGTHS) + bytes([0x00]))
    scan = bytes([3]) + b"".join(bytes([cid, 0x00]) for cid in (1, 2, 3)) + bytes([0, 63, 0])

    bits = _BitWriter()
    previous = [0, 0, 0]
    for block_y in range(HEIGHT // 8):
        for block_x in range(WIDTH // 8):
            r, g, b = _rgb(block_x * 8 + 4, block_y * 8 + 4)
            ycc = (0.299 * r + 0.587 * g + 0.114 * b,
                   128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                   128 + 0.5 * r - 0.418688 * g - 0.081312 * b)
            for component, value in enumerate(ycc):
                dc = round((value - 128) * 8)  # the DCT's DC term of a flat 8×8 block
                diff = dc - previous[component]
                previous[component] = dc
                size = abs(diff).bit_length()
                bits.write(size, 4)  # its Huffman code (all codes are 4 bits)
                if size:
                    bits.write(diff if diff > 0 else diff + (1 << size) - 1, size)
                bits.write(0, 1)  # EOB: all AC coefficients are zero
    bits.align(1)
    entropy = bits.to_bytes().replace(b"\xff", b"\xff\x00")  # byte stuffing
    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return (b"\xff\xd8" + segment(0xE0, jfif) + segment(0xDB, quant) + segment(0xC0, frame)
            + segment(0xC4, huffman) + segment(0xDA, scan) + entropy + b"\xff\xd9")


# --------------------------------------------------------------------------------- PDF
def make_pdf(pages: int = 3) -> bytes:
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(
            f"{4 + 2 * i} 0 R".encode() for i in range(pages)) + f"] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for page in range(pages):
        text = (f"BT /F1 18 Tf 72 720 Td (batchrun sample report, page {page + 1} of {pages}) Tj "
                f"0 -28 Td /F1 12 Tf (Quarterly figures: revenue {120 + 7 * page} k, "
                f"costs {80 + 5 * page} k.) Tj ET").encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       f"/Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {5 + 2 * page} 0 R >>".encode())
        objects.append(f"<< /Length {len(text)} >>\nstream\n".encode() + text
                       + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n"
              f"startxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


# --------------------------------------------------------------------------------- WAV
def make_wav(seconds: float = 1.0, rate: int = 8000, hz: float = 440.0) -> bytes:
    samples = b"".join(
        struct.pack("<h", round(12000 * math.sin(2 * math.pi * hz * i / rate)))
        for i in range(int(seconds * rate))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    return buffer.getvalue()


# --------------------------------------------------------------------------------- MP3
def make_mp3(seconds: float = 2.0) -> bytes:
    # MPEG-1 Layer III, no CRC; 32 kbit/s (index 1), 48 kHz (index 1), mono.
    header = bytes([0xFF, 0xFB, 0x14, 0xC0])
    frame_bytes = 144 * 32_000 // 48_000  # 96: no padding needed at 48 kHz
    # 17 bytes of side info, all zero: no main data, so each granule decodes to silence.
    frame = header + bytes(frame_bytes - len(header))
    frames = math.ceil(seconds * 48_000 / 1152)
    title = b"\x00batchrun sample (silence)"
    tag_frame = b"TIT2" + struct.pack(">I", len(title)) + b"\x00\x00" + title
    size = len(tag_frame)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + synchsafe + tag_frame + frame * frames


# --------------------------------------------------------------------------------- MP4
def _nal(kind: int, rbsp: bytes) -> bytes:
    """A NAL unit (nal_ref_idc 3) with emulation-prevention bytes inserted."""
    out = bytearray([0x60 | kind])
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _sps() -> bytes:
    bits = _BitWriter()
    bits.write(66, 8)  # profile_idc: Baseline
    bits.write(0b11000000, 8)  # constraint_set0/1: Constrained Baseline
    bits.write(30, 8)  # level 3.0
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(0)  # log2_max_frame_num_minus4
    bits.ue(2)  # pic_order_cnt_type 2: output order = decoding order
    bits.ue(0)  # max_num_ref_frames: every picture is intra
    bits.write(0, 1)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(WIDTH // 16 - 1)
    bits.ue(HEIGHT // 16 - 1)
    bits.write(1, 1)  # frame_mbs_only_flag
    bits.write(1, 1)  # direct_8x8_inference_flag
    bits.write(0, 1)  # frame_cropping_flag
    bits.write(0, 1)  # vui_parameters_present_flag
    bits.write(1, 1)  # rbsp_stop_one_bit
    bits.align(0)
    return _nal(7, bits.to_bytes())


def _pps() -> bytes:
    bits = _BitWriter()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(0)  # seq_parameter_set_id
    bits.write(0, 1)  # entropy_coding_mode_flag: CAVLC
    bits.write(0, 1)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)  # num_ref_idx_l0_default_active_minus1
    bits.ue(0)  # num_ref_idx_l1_default_active_minus1
    bits.write(0, 1)  # weighted_pred_flag
    bits.write(0, 2)  # weighted_bipred_idc
    bits.se(0)  # pic_init_qp_minus26
    bits.se(0)  # pic_init_qs_minus26
    bits.se(0)  # chroma_qp_index_offset
    bits.write(0, 1)  # deblocking_filter_control_present_flag
    bits.write(0, 1)  # constrained_intra_pred_flag
    bits.write(0, 1)  # redundant_pic_cnt_present_flag
    bits.write(1, 1)  # rbsp_stop_one_bit
    bits.align(0)
    return _nal(8, bits.to_bytes())


def _yuv(x: int, y: int, t: int) -> tuple[int, int, int]:
    r, g, b = _rgb(x, y, t)
    luma = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    cb = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    cr = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256
    return tuple(min(235, max(16, round(v))) for v in (luma, cb, cr))  # type: ignore[return-value]


def _idr_slice(index: int) -> bytes:
    bits = _BitWriter()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(7)  # slice_type: I (every slice of the picture)
    bits.ue(0)  # pic_parameter_set_id
    bits.write(0, 4)  # frame_num
    bits.ue(index % 2)  # idr_pic_id: differs between consecutive IDR pictures
    bits.write(0, 1)  # no_output_of_prior_pics_flag
    bits.write(0, 1)  # long_term_reference_flag
    bits.se(0)  # slice_qp_delta
    for mb_y in range(HEIGHT // 16):
        for mb_x in range(WIDTH // 16):
            bits.ue(25)  # mb_type I_PCM: the samples follow, uncompressed
            bits.align(0)  # pcm_alignment_zero_bit
            samples = [_yuv(mb_x * 16 + x, mb_y * 16 + y, index)
                       for y in range(16) for x in range(16)]
            for luma, _, _ in samples:
                bits.write(luma, 8)
            for plane in (1, 2):  # 4:2:0: one chroma sample per 2×2 luma samples
                for y in range(0, 16, 2):
                    for x in range(0, 16, 2):
                        bits.write(samples[y * 16 + x][plane], 8)
    bits.write(1, 1)  # rbsp_stop_one_bit
    bits.align(0)
    return _nal(5, bits.to_bytes())


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def make_mp4(seconds: float = 2.0, fps: int = 2) -> bytes:
    timescale = 1000
    count = int(seconds * fps)
    delta = timescale // fps
    duration = count * delta
    sps, pps = _sps(), _pps()
    samples = [struct.pack(">I", len(nal)) + nal for nal in (_idr_slice(i) for i in range(count))]

    def moov(chunk_offset: int) -> bytes:
        avcc = _box(b"avcC", bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]),
                    struct.pack(">H", len(sps)), sps, b"\x01", struct.pack(">H", len(pps)), pps)
        avc1 = _box(b"avc1", bytes(6), struct.pack(">H", 1), bytes(16),
                    struct.pack(">HHIIIH", WIDTH, HEIGHT, 0x480000, 0x480000, 0, 1),
                    bytes(32), struct.pack(">Hh", 0x18, -1), avcc)
        stbl = _box(
            b"stbl",
            _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
            _full_box(b"stts", 0, 0, struct.pack(">III", 1, count, delta)),
            _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, count, 1)),
            _full_box(b"stsz", 0, 0, struct.pack(">II", 0, count),
                      b"".join(struct.pack(">I", len(s)) for s in samples)),
            _full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset)),
        )
        minf = _box(b"minf", _full_box(b"vmhd", 0, 1, bytes(8)),
                    _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1),
                                            _full_box(b"url ", 0, 1))), stbl)
        mdia = _box(b"mdia",
                    _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, duration,
                                                         0x55C4, 0)),
                    _full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\x00"),
                    minf)
        tkhd = _full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, duration), bytes(8),
                         struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX,
                         struct.pack(">II", WIDTH << 16, HEIGHT << 16))
        mvhd = _full_box(b"mvhd", 0, 0, struct.pack(">IIIIIH", 0, 0, timescale, duration,
                                                    0x10000, 0x100), bytes(10), _MATRIX,
                         bytes(24), struct.pack(">I", 2))
        return _box(b"moov", mvhd, _box(b"trak", tkhd, mdia))

    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    head_size = len(ftyp) + len(moov(0)) + 8  # the mdat box header comes before its data
    return ftyp + moov(head_size) + _box(b"mdat", *samples)


FILES = {
    "chart.png": make_png,
    "photo.jpg": make_jpeg,
    "report.pdf": make_pdf,
    "tone.wav": make_wav,
    "silence.mp3": make_mp3,
    "clip.mp4": make_mp4,
}


def write_all(folder: Path) -> dict[str, Path]:
    """Write every sample file into ``folder``; name → path."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, make in FILES.items():
        path = folder / name
        path.write_bytes(make())  # type: ignore[operator]
        written[name] = path
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "media"
    for path in write_all(target).values():
        print(f"{path}  {path.stat().st_size:,} bytes")
