"""Reading and writing segmentations (structures) without Slicer or VTK.

Supported inputs (:func:`readSegmentation`, :func:`readSegmentationWithGeometry`):

- Slicer ``.seg.nrrd``: 3D labelmap (one layer, ``SegmentN_LabelValue``), 4D layered (first axis of kind ``list``,
  ``SegmentN_Layer``), and the legacy 4D-spatial format of Slicer 4.x/SlicerRT (``space dimension: 4``, one segment
  per 4th index, ``Segmentation_Extent`` giving the offset of the stored block in the reference grid; its numbers are
  RAS). Header keys: ``SegmentN_ID/_Name/_Color (or _DefaultColor)/_LabelValue/_Layer/_Extent``
  (Slicer ``vtkMRMLSegmentationStorageNode``).
- plain binary or label ``.nrrd`` / ``.nii`` / ``.nii.gz`` / ``.mha`` (one structure per non-zero label);
- DICOM RTSTRUCT (via :mod:`.rtstruct`);
- SlicerRT planar-contour segmentations ``.seg.vtm`` (VTK XML multiblock pointing to one ``.vtp`` PolyData per
  segment, closed polylines in RAS). The XML is parsed here (ascii, inline base64 binary, appended base64/raw,
  optionally zlib-compressed) and the contours are rasterised with :mod:`.contours` (even-odd rule, voxel centres).

All geometries returned are LPS (:class:`~.geometry.ImageGeometry`); RAS files are converted explicitly.
:func:`writeSegNrrd` writes the current Slicer ``.seg.nrrd`` format (3D labelmap when segments do not overlap, else
4D layered) in LPS.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import logging
import os
import re
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contours import rasterizeContours, structureSetPlaneSpacing
from .errors import InputError, libraryReason
from .geometry import ImageGeometry

__all__ = [
    "readSegmentation",
    "readSegmentationWithGeometry",
    "readNrrd",
    "NrrdData",
    "readVtkPlanarContours",
    "PlanarContourSegment",
    "writeSegNrrd",
    "geometryFromSlicerGeometryString",
    "embedOnGrid",
    "latticeOffset",
]

logger = logging.getLogger(__name__)

Color = tuple[float, float, float]


# ======================================================================================================== NRRD

_NRRD_TYPES = {
    "signed char": "i1", "int8": "i1", "int8_t": "i1",
    "uchar": "u1", "unsigned char": "u1", "uint8": "u1", "uint8_t": "u1",
    "short": "i2", "short int": "i2", "signed short": "i2", "signed short int": "i2", "int16": "i2", "int16_t": "i2",
    "ushort": "u2", "unsigned short": "u2", "unsigned short int": "u2", "uint16": "u2", "uint16_t": "u2",
    "int": "i4", "signed int": "i4", "int32": "i4", "int32_t": "i4",
    "uint": "u4", "unsigned int": "u4", "uint32": "u4", "uint32_t": "u4",
    "longlong": "i8", "long long": "i8", "long long int": "i8", "signed long long": "i8",
    "signed long long int": "i8", "int64": "i8", "int64_t": "i8",
    "ulonglong": "u8", "unsigned long long": "u8", "unsigned long long int": "u8", "uint64": "u8", "uint64_t": "u8",
    "float": "f4", "double": "f8",
}


@dataclass
class NrrdData:
    """A parsed NRRD file: ``data`` in file axis order reversed (numpy C order: last file axis first),
    ``fields`` (standard fields, lower case), ``keyValues`` (``key:=value`` pairs), ``spaceDirections`` (one row per
    file axis; ``None`` for non-spatial axes), ``spaceOrigin`` and ``space`` (e.g. ``left-posterior-superior``,
    ``""`` when absent)."""

    data: np.ndarray
    fields: dict
    keyValues: dict
    sizes: list
    kinds: list
    space: str
    spaceDirections: list
    spaceOrigin: np.ndarray | None


def _parseVector(text: str) -> np.ndarray | None:
    text = text.strip()
    if text == "none":
        return None
    return np.array([float(v) for v in text.strip("()").split(",")])


def readNrrd(path: str | os.PathLike) -> NrrdData:
    """Parse an attached-header NRRD file (raw, gzip, bzip2 or ascii encoding; any endianness).

    Raises :class:`InputError` naming the file when it is not a NRRD or is truncated.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror})", path) from None
    if not raw.startswith(b"NRRD"):
        raise InputError("not a NRRD file (missing the NRRD magic)", path)
    # the header ends at its first blank line, whatever the line endings (CRLF from Windows tools); searching for
    # "\n\n" first would find a byte pair in the binary data of a CRLF file instead
    blank = re.search(rb"\r?\n\r?\n", raw)
    if blank is None:
        raise InputError("the NRRD header is not terminated by a blank line (truncated file?)", path)
    body = raw[blank.end():]
    header = raw[:blank.start()].decode("latin-1").splitlines()
    fields: dict[str, str] = {}
    keyValues: dict[str, str] = {}
    for line in header[1:]:
        if not line or line.startswith("#"):
            continue
        if ":=" in line:
            key, value = line.split(":=", 1)
            keyValues[key] = value
        elif ": " in line:
            key, value = line.split(": ", 1)
            fields[key.strip().lower()] = value.strip()
    if "data file" in fields or "datafile" in fields:
        raise InputError("detached-header NRRD (.nhdr) files are not supported; save as a single .nrrd", path)
    try:
        dtype = np.dtype(_NRRD_TYPES[fields["type"].lower()])
        sizes = [int(v) for v in fields["sizes"].split()]
    except KeyError as exc:
        raise InputError(f"the NRRD header lacks or has an unknown field ({exc})", path) from None
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if fields.get("endian", "little") == "big" else "<")
    encoding = fields.get("encoding", "raw").lower()
    count = int(np.prod(sizes))
    need = count * dtype.itemsize
    try:
        lineSkip = int(fields.get("line skip", fields.get("lineskip", "0")))
        byteSkip = int(fields.get("byte skip", fields.get("byteskip", "0")))
    except ValueError:
        raise InputError("the NRRD 'line skip' / 'byte skip' fields are not whole numbers", path) from None
    if lineSkip < 0 or byteSkip < -1 or (byteSkip == -1 and encoding != "raw"):
        raise InputError(f"the NRRD skips (line skip {lineSkip}, byte skip {byteSkip}) are not valid for encoding "
                         f"'{encoding}'", path)
    if encoding not in ("raw", "gzip", "gz", "bzip2", "bz2", "ascii", "text", "txt"):
        raise InputError(f"NRRD encoding '{encoding}' is not supported", path)
    try:
        # lines are skipped in the file, before any decompression; bytes after it, in the data as decoded (teem's
        # reader, which ITK's and Slicer's are: "byte skip" of a compressed encoding counts decompressed bytes);
        # byte skip -1 (raw only) means the data are the file's last bytes
        for _ in range(lineSkip):
            end = body.find(b"\n")
            if end < 0:
                raise ValueError(f"fewer than {lineSkip} lines to skip")
            body = body[end + 1:]
        if encoding in ("gzip", "gz"):
            body = gzip.decompress(body)
        elif encoding in ("bzip2", "bz2"):
            body = bz2.decompress(body)
        if byteSkip == -1:
            body = body[max(len(body) - need, 0):]
        elif byteSkip:
            body = body[byteSkip:]
        if encoding in ("ascii", "text", "txt"):
            values = np.array(body.decode("latin-1").split(), dtype=float)
            body = values.astype(dtype).tobytes()
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise InputError(f"the NRRD data cannot be decoded ({exc}); the file is probably truncated", path) from None
    if len(body) < need:
        raise InputError(f"the NRRD data is truncated ({len(body)} of {need} bytes)", path)
    data = np.frombuffer(body[:need], dtype=dtype).reshape(sizes[::-1]).astype(dtype.newbyteorder("="))
    kinds = fields.get("kinds", " ".join(["domain"] * len(sizes))).split()
    spaceDirections: list = []
    if "space directions" in fields:
        spaceDirections = [_parseVector(v) for v in re.findall(r"\([^)]*\)|none", fields["space directions"])]
    origin = _parseVector(fields["space origin"]) if "space origin" in fields else None
    return NrrdData(data=data, fields=fields, keyValues=keyValues, sizes=sizes, kinds=kinds,
                    space=fields.get("space", "").lower(), spaceDirections=spaceDirections, spaceOrigin=origin)


def _spatialGeometry(nrrd: NrrdData, spatialAxes: list[int], path, extentOffset=(0, 0, 0),
                     assumeRas: bool = False) -> ImageGeometry:
    """LPS geometry of the spatial axes of a NRRD (``space`` RAS/LPS, or legacy RAS when ``assumeRas``)."""
    if not nrrd.spaceDirections or nrrd.spaceOrigin is None:
        raise InputError("the NRRD file has no 'space directions'/'space origin': its position in the patient is "
                         "unknown", path)
    dirs = np.array([nrrd.spaceDirections[a][:3] for a in spatialAxes], dtype=float)  # rows = axes
    origin = np.array(nrrd.spaceOrigin[:3], dtype=float)
    space = nrrd.space
    if space in ("right-anterior-superior", "ras") or (not space and assumeRas):
        flip = np.array([-1.0, -1.0, 1.0])
        dirs = dirs * flip[None, :]
        origin = origin * flip
    elif space not in ("left-posterior-superior", "lps", ""):
        raise InputError(f"NRRD space '{space}' is not supported (use RAS or LPS)", path)
    spacing = np.linalg.norm(dirs, axis=1)
    direction = (dirs / spacing[:, None]).T  # columns = axes
    origin = origin + direction @ (spacing * np.asarray(extentOffset, dtype=float))
    sizes = [nrrd.sizes[a] for a in spatialAxes]
    return ImageGeometry(tuple(sizes), tuple(spacing), tuple(origin), tuple(direction.ravel()))


def _parseColor(text: str | None) -> Color | None:
    if not text:
        return None
    try:
        values = [float(v) for v in text.split()[:3]]
    except ValueError:
        return None
    return tuple(values) if len(values) == 3 else None  # type: ignore[return-value]


def _readSegNrrd(path: Path) -> tuple[dict, ImageGeometry, dict]:
    nrrd = readNrrd(path)
    kv = nrrd.keyValues
    masks: dict[str, np.ndarray] = {}
    colors: dict[str, Color] = {}
    segmentIndices = sorted(int(m.group(1)) for k in kv if (m := re.fullmatch(r"Segment(\d+)_ID", k)))
    names = {}
    for n in segmentIndices:
        name = kv.get(f"Segment{n}_Name") or kv.get(f"Segment{n}_ID") or f"Segment_{n}"
        while name in names.values():
            name = name + "_"
        names[n] = name
        color = _parseColor(kv.get(f"Segment{n}_Color") or kv.get(f"Segment{n}_DefaultColor"))
        if color:
            colors[name] = color
    dim = len(nrrd.sizes)
    if dim == 4 and "Segmentation_Extent" in kv and nrrd.kinds[0] == "domain":
        # legacy Slicer 4D-spatial: axes i, j, k, segment; numbers in RAS; stored block offset by the extent
        extent = [int(v) for v in kv["Segmentation_Extent"].split()]
        geometry = _spatialGeometry(nrrd, [0, 1, 2], path, extentOffset=(extent[0], extent[2], extent[4]),
                                    assumeRas=True)
        data = nrrd.data  # shape (nSeg, nk, nj, ni)
        for n in segmentIndices:
            masks[names[n]] = data[n] != 0
        return masks, geometry, colors
    if dim == 4:
        listAxis = next((a for a, kind in enumerate(nrrd.kinds) if kind not in ("domain", "space")), None)
        if listAxis != 0:
            raise InputError("a 4D segmentation NRRD must have its segment/layer axis first (kinds: list domain "
                             "domain domain)", path)
        geometry = _spatialGeometry(nrrd, [1, 2, 3], path)
        layers = np.moveaxis(nrrd.data, -1, 0)  # (layer, nk, nj, ni)
    elif dim == 3:
        geometry = _spatialGeometry(nrrd, [0, 1, 2], path)
        layers = nrrd.data[None]
    else:
        raise InputError(f"a segmentation must be 3D or 4D, this NRRD is {dim}D", path)
    if not segmentIndices:
        # a plain label image: one structure per non-zero label; several layers (channels, as a one-hot mask
        # written by pynrrd) one structure per layer and label, an empty layer kept empty (a review: every layer
        # but the first was dropped without a word)
        stem = path.name.split(".")[0]
        for index, labelImage in enumerate(layers):
            _requireIntegerLabels(labelImage, path)
            values = [v for v in np.unique(labelImage) if v != 0]
            prefix = stem if layers.shape[0] == 1 else f"{stem}_layer{index}"
            if len(values) <= 1:
                masks[prefix] = labelImage != 0
            else:
                masks.update({f"{prefix}_{int(v)}": labelImage == v for v in values})
        return masks, geometry, colors
    for n in segmentIndices:
        layer = int(kv.get(f"Segment{n}_Layer", "0" if dim == 3 else str(n)))
        if layer >= layers.shape[0]:
            raise InputError(f"segment {names[n]} refers to layer {layer} but the file has {layers.shape[0]}", path)
        labelValue = int(kv.get(f"Segment{n}_LabelValue", "1"))
        masks[names[n]] = layers[layer] == labelValue
    return masks, geometry, colors


def _requireIntegerLabels(labels: np.ndarray, path: Path) -> None:
    """A labelmap holds whole numbers: a dose given as the segmentation became 32 structures "good_0" ... "good_31"
    (an adversarial review)."""
    if not np.issubdtype(labels.dtype, np.floating):
        return
    whole = np.isfinite(labels) & (labels == np.round(labels))
    if not whole.all():
        raise InputError(f"holds non-integer values (e.g. {float(labels[~whole].flat[0]):.4g}): a dose or an image, "
                         "not a labelmap or mask", path)


def _readImageMask(path: Path) -> tuple[dict, ImageGeometry, dict]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read the image ({libraryReason(exc)})", path) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("a mask image must be a 3D single-component image", path)
    geometry = ImageGeometry.fromImage(image)
    labels = sitk.GetArrayFromImage(image)
    _requireIntegerLabels(labels, path)
    values = [v for v in np.unique(labels) if v != 0]
    stem = path.name.split(".")[0]
    if len(values) <= 1:
        return {stem: labels != 0}, geometry, {}
    return {f"{stem}_{int(v)}": labels == v for v in values}, geometry, {}


# ===================================================================================================== VTK XML

_VTK_TYPES = {"Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4", "UInt32": "u4",
              "Int64": "i8", "UInt64": "u8", "Float32": "f4", "Float64": "f8", "Char": "i1", "UChar": "u1",
              "String": "u1", "Bit": "u1", "IdType": "i8"}


class _VtkXmlFile:
    """Minimal reader for VTK XML serial files (what vtkXMLPolyDataWriter / vtkXMLMultiBlockDataWriter write)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read the file ({exc.strerror})", path) from None
        self.appended = b""
        start = raw.find(b"<AppendedData")
        if start >= 0:
            underscore = raw.find(b"_", raw.find(b">", start))
            end = raw.rfind(b"</AppendedData>")
            if underscore < 0 or end < 0:
                raise InputError("the VTK file's appended data section is truncated", path)
            self.appended = raw[underscore + 1:end]
            raw = raw[:underscore] + raw[end:]
        try:
            self.root = ET.fromstring(raw)
        except ET.ParseError as exc:
            raise InputError(f"the VTK XML cannot be parsed ({exc}); the file is probably truncated", path) from None
        if self.root.tag != "VTKFile":
            raise InputError("not a VTK XML file", path)
        self.byteOrder = "<" if self.root.get("byte_order", "LittleEndian") == "LittleEndian" else ">"
        self.headerType = np.dtype(_VTK_TYPES[self.root.get("header_type", "UInt32")]).newbyteorder(self.byteOrder)
        self.compressor = self.root.get("compressor", "")
        if self.compressor and self.compressor != "vtkZLibDataCompressor":
            raise InputError(f"VTK compressor {self.compressor} is not supported (only zlib); re-save the "
                             "segmentation from Slicer with default settings", path)
        self.appendedEncoding = ""
        appendedElement = self.root.find("AppendedData")
        if appendedElement is not None:
            self.appendedEncoding = appendedElement.get("encoding", "raw")

    # -- decoding ------------------------------------------------------------------------------------------------
    def _inlineBinary(self, text: str) -> bytes:
        text = "".join(text.split())
        h = self.headerType.itemsize
        if not self.compressor:
            data = base64.b64decode(text)
            nbytes = int(np.frombuffer(data[:h], dtype=self.headerType)[0])
            return data[h:h + nbytes]
        # compressed: header base64-encoded on its own, then the compressed blocks
        first = base64.b64decode(text[:4 * ((h + 2) // 3)])
        nblocks = int(np.frombuffer(first[:h], dtype=self.headerType)[0])
        headerLen = (3 + nblocks) * h
        headerChars = 4 * ((headerLen + 2) // 3)
        header = np.frombuffer(base64.b64decode(text[:headerChars]), dtype=self.headerType)[:3 + nblocks]
        payload = base64.b64decode(text[headerChars:])
        return self._inflate(header, payload)

    def _inflate(self, header, payload: bytes) -> bytes:
        nblocks = int(header[0])
        csizes = [int(v) for v in header[3:3 + nblocks]]
        out = []
        pos = 0
        for c in csizes:
            out.append(zlib.decompress(payload[pos:pos + c]))
            pos += c
        return b"".join(out)

    def _appendedArray(self, offset: int) -> bytes:
        h = self.headerType.itemsize
        if self.appendedEncoding == "base64":
            text = b"".join(self.appended[offset:].split()).decode("ascii")
            if not self.compressor:
                first = base64.b64decode(text[:4 * ((h + 2) // 3)])
                nbytes = int(np.frombuffer(first[:h], dtype=self.headerType)[0])
                data = base64.b64decode(text[:4 * ((h + nbytes + 2) // 3)])
                return data[h:h + nbytes]
            first = base64.b64decode(text[:4 * ((h + 2) // 3)])
            nblocks = int(np.frombuffer(first[:h], dtype=self.headerType)[0])
            headerChars = 4 * (((3 + nblocks) * h + 2) // 3)
            header = np.frombuffer(base64.b64decode(text[:headerChars]), dtype=self.headerType)[:3 + nblocks]
            total = int(sum(int(v) for v in header[3:3 + nblocks]))
            payload = base64.b64decode(text[headerChars:headerChars + 4 * ((total + 2) // 3)])
            return self._inflate(header, payload)
        data = self.appended[offset:]
        if not self.compressor:
            nbytes = int(np.frombuffer(data[:h], dtype=self.headerType)[0])
            return data[h:h + nbytes]
        nblocks = int(np.frombuffer(data[:h], dtype=self.headerType)[0])
        header = np.frombuffer(data[:(3 + nblocks) * h], dtype=self.headerType)
        return self._inflate(header, data[(3 + nblocks) * h:])

    def arrayBytes(self, element: ET.Element) -> bytes:
        fmt = element.get("format", "ascii")
        try:
            if fmt == "binary":
                return self._inlineBinary(element.text or "")
            if fmt == "appended":
                return self._appendedArray(int(element.get("offset", "0")))
        except (ValueError, zlib.error, IndexError, base64.binascii.Error) as exc:
            raise InputError(f"array '{element.get('Name')}' cannot be decoded ({exc}); the file is probably "
                             "truncated", self.path) from None
        raise ValueError("ascii")

    def numeric(self, element: ET.Element) -> np.ndarray:
        vtkType = element.get("type", "Float32")
        dtype = np.dtype(_VTK_TYPES.get(vtkType, "f8"))
        if element.get("format", "ascii") == "ascii":
            return np.array((element.text or "").split(), dtype=float).astype(dtype)
        data = self.arrayBytes(element)
        if dtype.itemsize > 1:
            dtype = dtype.newbyteorder(self.byteOrder)
        usable = len(data) - len(data) % dtype.itemsize
        return np.frombuffer(data[:usable], dtype=dtype).astype(dtype.newbyteorder("="))

    def strings(self, element: ET.Element) -> list[str]:
        if element.get("format", "ascii") == "ascii":
            codes = bytes(int(v) for v in (element.text or "").split())
        else:
            codes = self.arrayBytes(element)
        parts = codes.split(b"\x00")
        if parts and parts[-1] == b"":
            parts = parts[:-1]
        return [p.decode("utf-8", errors="replace") for p in parts]


@dataclass(frozen=True)
class PlanarContourSegment:
    """One segment of a SlicerRT planar-contour segmentation: LPS contours plus metadata."""

    name: str
    segmentId: str
    color: Color | None
    contoursLps: tuple  # tuple of (n, 3) arrays
    referenceGeometry: ImageGeometry | None
    masterRepresentation: str


def geometryFromSlicerGeometryString(text: str) -> ImageGeometry | None:
    """Parse Slicer's "Reference image geometry" string (16 ijkToRAS matrix values then the 6 extent values).

    Returns the LPS geometry of the extent, or ``None`` when the string is empty.
    """
    values = [v for v in text.split(";") if v.strip() != ""]
    if len(values) < 22:
        return None
    m = np.array([float(v) for v in values[:16]]).reshape(4, 4)
    extent = [int(float(v)) for v in values[16:22]]
    ijkToLps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ m
    axes = ijkToLps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    direction = axes / spacing[None, :]
    origin = ijkToLps[:3, 3] + axes @ np.array([extent[0], extent[2], extent[4]], dtype=float)
    size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    if min(size) < 1:
        return None
    return ImageGeometry(size, tuple(spacing), tuple(origin), tuple(direction.ravel()))


def _referenceGeometryFromConversionParameters(text: str) -> ImageGeometry | None:
    for item in text.split("&"):
        parts = item.split("|")
        if len(parts) >= 2 and parts[0] == "Reference image geometry":
            try:
                return geometryFromSlicerGeometryString(parts[1])
            except ValueError:
                return None
    return None


def _readVtp(path: Path) -> PlanarContourSegment:
    vtk = _VtkXmlFile(path)
    poly = vtk.root.find("PolyData")
    if poly is None:
        raise InputError("not a VTK PolyData file", path)
    meta: dict[str, object] = {}
    fieldData = poly.find("FieldData")
    if fieldData is not None:
        for element in fieldData:
            name = element.get("Name", "")
            if element.get("type") == "String":
                values = vtk.strings(element)
                meta[name] = values[0] if values else ""
            else:
                meta[name] = vtk.numeric(element)
    contours: list[np.ndarray] = []
    for piece in poly.findall("Piece"):
        pointsElement = piece.find("Points/DataArray")
        nPoints = int(piece.get("NumberOfPoints", "0"))
        if nPoints == 0 or pointsElement is None:
            continue
        points = vtk.numeric(pointsElement).astype(float)
        if points.size < 3 * nPoints:
            raise InputError(f"the PolyData holds {points.size // 3} of {nPoints} points; the file is truncated",
                             path)
        points = points[:3 * nPoints].reshape(nPoints, 3)
        pointsLps = points * np.array([-1.0, -1.0, 1.0])  # VTK/Slicer files are RAS
        nPolys = int(piece.get("NumberOfPolys", "0"))
        lines = piece.find("Lines")
        nLines = int(piece.get("NumberOfLines", "0"))
        if nLines == 0 or lines is None:
            if nPolys:
                raise InputError("this segmentation stores closed surfaces (triangles), not planar contours; "
                                 "export it from Slicer as a .seg.nrrd (binary labelmap) instead", path)
            continue
        arrays = {a.get("Name"): a for a in lines.findall("DataArray")}
        if "connectivity" not in arrays or "offsets" not in arrays:
            raise InputError("the PolyData lines lack connectivity/offsets arrays", path)
        connectivity = vtk.numeric(arrays["connectivity"]).astype(np.int64)
        offsets = vtk.numeric(arrays["offsets"]).astype(np.int64)
        if len(offsets) == nLines + 1 and offsets[0] == 0:
            starts, ends = offsets[:-1], offsets[1:]
        elif len(offsets) == nLines:
            ends = offsets
            starts = np.concatenate([[0], offsets[:-1]])
        else:
            raise InputError(f"the PolyData has {len(offsets)} line offsets for {nLines} lines", path)
        if len(connectivity) < (ends[-1] if len(ends) else 0):
            raise InputError("the PolyData line connectivity is truncated", path)
        for s, e in zip(starts, ends, strict=True):
            ids = connectivity[s:e]
            if len(ids) > 1 and ids[0] == ids[-1]:
                ids = ids[:-1]
            if len(ids) >= 3:
                contours.append(pointsLps[ids])
    color = None
    if "Segment_Color" in meta or "Segment_DefaultColor" in meta:
        c = np.asarray(meta.get("Segment_Color", meta.get("Segment_DefaultColor")), dtype=float).ravel()
        if c.size >= 3:
            color = (float(c[0]), float(c[1]), float(c[2]))
    reference = None
    if isinstance(meta.get("Segmentation_ConversionParameters"), str):
        reference = _referenceGeometryFromConversionParameters(meta["Segmentation_ConversionParameters"])
    name = str(meta.get("Segment_Name") or meta.get("Segment_ID") or path.stem)
    return PlanarContourSegment(name=name, segmentId=str(meta.get("Segment_ID", name)), color=color,
                                contoursLps=tuple(contours), referenceGeometry=reference,
                                masterRepresentation=str(meta.get("Segmentation_MasterRepresentation", "")))


def readVtkPlanarContours(path: str | os.PathLike) -> list[PlanarContourSegment]:
    """Read a SlicerRT ``.seg.vtm`` (or a single ``.vtp``) planar-contour segmentation: one entry per segment."""
    path = Path(path)
    if path.suffix.lower() == ".vtp":
        return [_readVtp(path)]
    vtm = _VtkXmlFile(path)
    files = [ds.get("file") for ds in vtm.root.iter("DataSet") if ds.get("file")]
    if not files:
        raise InputError("the multiblock file references no segment files", path)
    segments = []
    for f in files:
        blockPath = path.parent / f
        if not blockPath.exists():
            raise InputError(f"segment file {f} referenced by the multiblock file is missing", path)
        segments.append(_readVtp(blockPath))
    return segments


# ======================================================================================================= API

def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".seg.vtm") or name.endswith(".vtm") or name.endswith(".vtp"):
        return "vtk"
    if name.endswith(".nrrd"):
        return "nrrd"
    if name.endswith(".dcm") or path.is_dir():
        return "dicom"
    if name.endswith((".nii", ".nii.gz", ".mha", ".mhd")):
        return "image"
    from .dicomimage import isDicomPath

    try:  # an unreadable file says so (a verification review: "unknown segmentation format" for a mode-000 file)
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror})", path) from None
    if isDicomPath(path):  # with or without the preamble, whatever the name ("RS.1.2.840...")
        return "dicom"
    raise InputError("unknown segmentation format (expected .seg.nrrd, .nrrd, .nii(.gz), .seg.vtm or an "
                     "RTSTRUCT .dcm)", path)


def readSegmentationWithGeometry(path: str | os.PathLike, referenceGeometry: ImageGeometry | None = None,
                                 frameOfReferenceUid: str | None = None,
                                 referencePath: str | os.PathLike | None = None, cutAtEdge: set | None = None
                                 ) -> tuple[dict[str, np.ndarray], ImageGeometry, dict[str, Color]]:
    """Read structures with their own grid: ``(masks, geometry, colors)`` (colors as RGB floats 0-1).

    For contour formats (``.seg.vtm``, RTSTRUCT) the grid is ``referenceGeometry`` when given, else the segmentation's
    own "Reference image geometry" (SlicerRT) — an RTSTRUCT has no grid of its own and needs ``referenceGeometry``.
    ``frameOfReferenceUid``: that of the image or dose the structures go with (``referencePath``), when known; an
    RTSTRUCT drawn in another frame of reference is refused naming both files and UIDs (the other formats carry none).
    ``cutAtEdge``: a set to receive the names of contour structures partly outside the grid (cut at its edge).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("the segmentation file does not exist", path)
    kind = _kind(path)
    if kind == "nrrd":
        return _readSegNrrd(path)
    if kind == "image":
        return _readImageMask(path)
    if kind == "vtk":
        segments = readVtkPlanarContours(path)
        geometry = referenceGeometry
        if geometry is None:
            geometry = next((s.referenceGeometry for s in segments if s.referenceGeometry is not None), None)
            if geometry is None:
                raise InputError("the planar-contour segmentation stores no reference image geometry; give the "
                                 "image (e.g. the dose) to rasterise it on", path)
        masks, colors = {}, {}
        setSpacing = structureSetPlaneSpacing([list(seg.contoursLps) for seg in segments], geometry)
        for seg in segments:
            if seg.masterRepresentation and seg.masterRepresentation != "Planar contour" and not seg.contoursLps:
                logger.warning("%s: segment '%s' has master representation '%s' and no planar contours",
                               path, seg.name, seg.masterRepresentation)
            mask, report = rasterizeContours(list(seg.contoursLps), geometry, name=seg.name,
                                             setPlaneSpacingMm=setSpacing)
            if report.partlyOutside:
                logger.warning("%s: %s", path, "; ".join(report.warnings))
                if cutAtEdge is not None and mask.any():
                    cutAtEdge.add(seg.name)
            if not mask.any():
                logger.warning("%s: segment '%s' is empty on the grid %s", path, seg.name, geometry.describe())
            name = seg.name
            while name in masks:
                name += "_"
            masks[name] = mask
            if seg.color is not None:
                colors[name] = seg.color
        return masks, geometry, colors
    # DICOM RTSTRUCT
    from .rtstruct import rasterizeAllWithReport, readRtStruct

    if referenceGeometry is None:
        raise InputError("an RTSTRUCT has no voxel grid of its own; give the image (CT or dose) to rasterise it on",
                         path)
    rt = readRtStruct(path)
    masks, report = rasterizeAllWithReport(rt, referenceGeometry, frameOfReferenceUid, referencePath=referencePath)
    if cutAtEdge is not None:
        cutAtEdge.update(name for name, r in report.reports.items() if r.partlyOutside and masks[name].any())
    colors = {r.name: tuple(c / 255.0 for c in r.color) for r in rt.rois if r.color is not None and r.name in masks}
    return masks, referenceGeometry, colors


def latticeOffset(geometry: ImageGeometry, referenceGeometry: ImageGeometry, toleranceVoxel: float = 1e-3
                  ) -> tuple[int, int, int] | None:
    """Integer (i, j, k) index of ``geometry``'s first voxel in ``referenceGeometry`` when both grids share the same
    lattice (same spacing and direction, origin offset a whole number of voxels), else ``None``."""
    if not (np.allclose(geometry.spacingMm, referenceGeometry.spacingMm, rtol=1e-5, atol=1e-6)
            and np.allclose(geometry.direction, referenceGeometry.direction, atol=1e-5)):
        return None
    offset = referenceGeometry.lpsToIndex(geometry.originMm)
    rounded = np.rint(offset)
    if np.abs(offset - rounded).max() > toleranceVoxel:
        return None
    return tuple(int(v) for v in rounded)  # type: ignore[return-value]


def embedOnGrid(mask: np.ndarray, geometry: ImageGeometry, referenceGeometry: ImageGeometry) -> np.ndarray | None:
    """Place a mask stored on a crop (or extension) of the reference lattice onto the reference grid, exactly (no
    interpolation): what Slicer writes is cropped to the segments' extent. ``None`` if the lattices differ; voxels
    outside the reference grid are dropped (the caller may warn)."""
    offset = latticeOffset(geometry, referenceGeometry)
    if offset is None:
        return None
    out = np.zeros(referenceGeometry.shape, dtype=bool)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    for axis, (o, n, nRef) in enumerate(zip(offset, geometry.sizeXyz, referenceGeometry.sizeXyz, strict=True)):
        lo, hi = max(o, 0), min(o + n, nRef)
        if hi <= lo:
            return out
        arrayAxis = 2 - axis
        dst[arrayAxis] = slice(lo, hi)
        src[arrayAxis] = slice(lo - o, hi - o)
    out[tuple(dst)] = np.asarray(mask, dtype=bool)[tuple(src)]
    return out


def readSegmentation(path: str | os.PathLike, referenceGeometry: ImageGeometry | None = None,
                     frameOfReferenceUid: str | None = None, referencePath: str | os.PathLike | None = None
                     ) -> dict[str, np.ndarray]:
    """Read structures as ``{name: bool mask [k, j, i]}``.

    With ``referenceGeometry``, contour formats are rasterised onto it; voxel formats must lie on the same lattice
    (e.g. a Slicer .seg.nrrd cropped to its extent is placed back exactly) — any other grid is refused with
    :class:`InputError`: resampling is explicit, never silent. ``frameOfReferenceUid`` and ``referencePath``: see
    :func:`readSegmentationWithGeometry`.
    """
    masks, geometry, _ = readSegmentationWithGeometry(path, referenceGeometry, frameOfReferenceUid, referencePath)
    if referenceGeometry is None or geometry.sameGridAs(referenceGeometry):
        return masks
    placed = {}
    for name, mask in masks.items():
        embedded = embedOnGrid(mask, geometry, referenceGeometry)
        if embedded is None:
            raise InputError(f"the segmentation's grid ({geometry.describe()}) differs from the reference grid "
                             f"({referenceGeometry.describe()}); resample it explicitly first", path)
        lost = int(mask.sum()) - int(embedded.sum())
        if lost:
            logger.warning("%s: %d voxels of '%s' lie outside the reference grid and were dropped", path, lost, name)
        placed[name] = embedded
    return placed


# ===================================================================================================== writing

def writeSegNrrd(path: str | os.PathLike, masks: dict[str, np.ndarray], geometry: ImageGeometry,
                 colors: dict[str, tuple] | None = None) -> None:
    """Write masks as a Slicer ``.seg.nrrd`` (LPS, gzip).

    Non-overlapping segments go into one 3D labelmap (label values 1..n); overlapping ones into a 4D layered file
    (first axis ``list``, each segment on the first layer where it does not overlap). Colors are RGB in 0-1 (or
    0-255 integers, converted).
    """
    colors = colors or {}
    names = list(masks)
    layers: list[np.ndarray] = []
    placement: dict[str, tuple[int, int]] = {}
    for name in names:
        m = np.asarray(masks[name], dtype=bool)
        if m.shape != geometry.shape:
            raise InputError(f"mask '{name}' has shape {m.shape}, the geometry {geometry.describe()}")
        for layerIndex, layer in enumerate(layers):
            if not np.any(layer[m]):
                label = int(layer.max()) + 1
                if label > 255:
                    continue
                layer[m] = label
                placement[name] = (layerIndex, label)
                break
        else:
            layer = np.zeros(geometry.shape, dtype=np.uint8)
            layer[m] = 1
            layers.append(layer)
            placement[name] = (len(layers) - 1, 1)
    if not layers:
        layers.append(np.zeros(geometry.shape, dtype=np.uint8))
    d = geometry.directionMatrix * np.array(geometry.spacingMm)[None, :]
    dirs = " ".join("(" + ",".join(f"{v:.17g}" for v in d[:, a]) + ")" for a in range(3))
    origin = "(" + ",".join(f"{v:.17g}" for v in geometry.originMm) + ")"
    ni, nj, nk = geometry.sizeXyz
    lines = ["NRRD0004", "# Complete NRRD file format specification at:",
             "# http://teem.sourceforge.net/nrrd/format.html", "type: unsigned char"]
    if len(layers) == 1:
        lines += ["dimension: 3", "space: left-posterior-superior", f"sizes: {ni} {nj} {nk}",
                  f"space directions: {dirs}", "kinds: domain domain domain"]
        data = layers[0]
    else:
        lines += ["dimension: 4", "space: left-posterior-superior", f"sizes: {len(layers)} {ni} {nj} {nk}",
                  f"space directions: none {dirs}", "kinds: list domain domain domain"]
        data = np.stack(layers, axis=-1)  # (nk, nj, ni, layer): layer varies fastest, as the first NRRD axis
    lines += ["encoding: gzip", f"space origin: {origin}"]
    kv = {
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ConversionParameters": "",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    for n, name in enumerate(names):
        layer, label = placement[name]
        m = np.asarray(masks[name], dtype=bool)
        if m.any():
            idx = [np.nonzero(m.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in (2, 1, 0)]
            extent = f"{idx[0][0]} {idx[0][-1]} {idx[1][0]} {idx[1][-1]} {idx[2][0]} {idx[2][-1]}"
        else:
            extent = "0 -1 0 -1 0 -1"
        color = colors.get(name, (0.5, 0.5, 0.5))
        if max(color) > 1.0:
            color = tuple(c / 255.0 for c in color)
        kv.update({
            f"Segment{n}_Color": " ".join(f"{c:.6g}" for c in color),
            f"Segment{n}_ColorAutoGenerated": "0",
            f"Segment{n}_Extent": extent,
            f"Segment{n}_ID": name,
            f"Segment{n}_LabelValue": str(label),
            f"Segment{n}_Layer": str(layer),
            f"Segment{n}_Name": name,
            f"Segment{n}_NameAutoGenerated": "0",
            f"Segment{n}_Tags": "",
        })
    lines += [f"{k}:={v}" for k, v in kv.items()]
    header = ("\n".join(lines) + "\n\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + gzip.compress(np.ascontiguousarray(data).tobytes(), compresslevel=6))
    logger.info("wrote %d segments to %s", len(names), path)

