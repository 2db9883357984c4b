"""MRML glue for radiologist border marks: :class:`~DelineationReviewLib.core.marks.MarkSet` <-> markups nodes.

Slicer's markups nodes hold RAS world coordinates; the core holds LPS. Every conversion here is explicit
(``lpsToRas`` / ``rasToLps``). Point marks become control points of one point list node; each arrow becomes a line
node with control point 0 = tail and 1 = tip (labelled ``tail`` / ``tip``), named by the mark's label. Confidence,
frame and id travel in the control point description (``confidence=0.8; frame=MRI; id=M1; free text``, the same
form as the ``.mrk.json`` files of :mod:`DelineationReviewLib.core.marks`), and the frame also as the node attribute
``DelineationReview.MarksFrame``.
"""

from __future__ import annotations

import logging

import vtk

from DelineationReviewLib.core.marks import BorderMark, MarkSet, formatDescription, parseDescription
from ReirradiationDoseLib.core.geometry import lpsToRas, rasToLps

__all__ = ["FRAME_ATTRIBUTE", "markupsNodesFromMarkSet", "markSetFromMarkupsNodes", "statedFrame"]

logger = logging.getLogger(__name__)

FRAME_ATTRIBUTE = "DelineationReview.MarksFrame"


def _addPoint(node, lps, label: str, description: str) -> int:
    ras = [float(v) for v in lpsToRas(lps)]
    index = node.AddControlPoint(vtk.vtkVector3d(*ras), label)
    node.SetNthControlPointDescription(index, description)
    return index


def markupsNodesFromMarkSet(scene, markSet: MarkSet, name: str = "BorderMarks"):
    """Create a point list node (point marks) and one line node per arrow in ``scene``.

    Returns ``(pointListNode, [lineNodes])``; the point list exists (possibly empty) so the caller always has a
    node to show.
    """
    pointList = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(name))
    pointList.SetAttribute(FRAME_ATTRIBUTE, markSet.frame)
    wasModifying = pointList.StartModify()
    for mark in markSet.marks:
        if mark.kind == "point":
            _addPoint(pointList, mark.tipLps, mark.label, formatDescription(mark))
    pointList.EndModify(wasModifying)
    lines = []
    for mark in markSet.marks:
        if mark.kind != "arrow":
            continue
        line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", scene.GenerateUniqueName(mark.label))
        line.SetAttribute(FRAME_ATTRIBUTE, markSet.frame)
        _addPoint(line, mark.tailLps, "tail", formatDescription(mark, "tail"))
        _addPoint(line, mark.tipLps, "tip", formatDescription(mark, "tip"))
        lines.append(line)
    logger.info("created %d border mark points and %d arrows (%s frame)", pointList.GetNumberOfControlPoints(),
                len(lines), markSet.frame)
    return pointList, lines


def _controlPoint(node, index: int, world: bool = False) -> dict:
    ras = [0.0, 0.0, 0.0]
    if world:
        node.GetNthControlPointPositionWorld(index, ras)
    else:
        node.GetNthControlPointPosition(index, ras)
    values, free = parseDescription(node.GetNthControlPointDescription(index))
    return {"lps": tuple(float(v) for v in rasToLps(ras)), "label": node.GetNthControlPointLabel(index),
            "values": values, "free": free}


def _frameOf(node, points, default: str | None) -> str | None:
    frames = {p["values"]["frame"].upper() for p in points if p["values"].get("frame")}
    attribute = node.GetAttribute(FRAME_ATTRIBUTE)
    if attribute:
        frames.add(attribute.upper())
    if len(frames) > 1:
        raise ValueError(f"markups node {node.GetName()!r} mixes frames: {', '.join(sorted(frames))}")
    return frames.pop() if frames else default


def statedFrame(node) -> str | None:
    """The frame a markups node says its points were placed in (``frame=`` in its control point descriptions, or
    the node attribute), upper case, or None when it says none."""
    points = [_controlPoint(node, i) for i in range(node.GetNumberOfControlPoints())]
    return _frameOf(node, points, None)


def markSetFromMarkupsNodes(nodes, frame: str | None = None, world: bool = False) -> MarkSet:
    """A :class:`MarkSet` from point list and line nodes (the inverse of :func:`markupsNodesFromMarkSet`).

    Point list control points become point marks (label = control point label); a line node with two control
    points becomes an arrow (tail/tip by the ``tail``/``tip`` labels or description ``role=``, else first = tail),
    labelled by the node name unless its description has ``label=``. The frame comes from the descriptions or the
    node attribute, else ``frame``, else MRI. Raises ``ValueError`` for other node types or mixed frames.
    ``world``: the positions where the scene shows them (through a transform the node is under), every mark in the
    frame ``frame`` (default CT), whatever the nodes state: a node placed on the MRI and put under its
    registration shows on the planning CT.
    """
    if not isinstance(nodes, list | tuple):
        nodes = [nodes]
    marks: list[BorderMark] = []
    frames = set()
    drafts = []
    for node in nodes:
        if node is None:
            continue
        count = node.GetNumberOfControlPoints()
        points = [_controlPoint(node, i, world) for i in range(count) if node.GetNthControlPointPositionStatus(i)
                  == node.PositionDefined]
        nodeFrame = None if world else _frameOf(node, points, None)
        if nodeFrame:
            frames.add(nodeFrame)
        if node.IsA("vtkMRMLMarkupsLineNode"):
            if len(points) != 2:
                raise ValueError(f"line {node.GetName()!r} needs 2 placed control points (tail, tip), has "
                                 f"{len(points)}")
            roles = [(p["values"].get("role") or p["label"]).strip().lower() for p in points]
            tail, tip = points if roles != ["tip", "tail"] else (points[1], points[0])
            confidence = tip["values"].get("confidence") or tail["values"].get("confidence")
            drafts.append(dict(label=tip["values"].get("label") or node.GetName(), tipLps=tip["lps"],
                               tailLps=tail["lps"], confidence=float(confidence) if confidence else None,
                               id=tip["values"].get("id", ""),
                               description="; ".join(dict.fromkeys(t for t in (tip["free"], tail["free"]) if t))))
        elif node.IsA("vtkMRMLMarkupsFiducialNode"):
            for number, p in enumerate(points, start=1):
                confidence = p["values"].get("confidence")
                drafts.append(dict(label=p["values"].get("label") or p["label"] or f"{node.GetName()}-{number}",
                                   tipLps=p["lps"], tailLps=None, confidence=float(confidence) if confidence else None,
                                   id=p["values"].get("id", ""), description=p["free"]))
        else:
            raise ValueError(f"{node.GetName()!r} ({node.GetClassName()}) is not a point list or a line")
    if len(frames) > 1:
        raise ValueError(f"the markups nodes are in different frames: {', '.join(sorted(frames))}")
    resolved = frames.pop() if frames else (frame or ("CT" if world else "MRI"))
    if frame and resolved != frame.upper():
        raise ValueError(f"the markups nodes are in the {resolved} frame, not {frame}")
    for draft in drafts:
        marks.append(BorderMark(frame=resolved, **draft))
    names = ", ".join(n.GetName() for n in nodes if n is not None)
    return MarkSet(tuple(marks), resolved, source=f"Slicer markups: {names}")
