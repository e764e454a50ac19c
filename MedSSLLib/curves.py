"""Live training curves as Slicer plot nodes: loss per step and validation Dice, one chart.

`TrainingCurves` owns two table nodes and a chart in the scene (hidden from node selectors) and refills the
tables from a `MedSSLLib.events.ProgressState`; MedSSLTrain shows the chart in a ``qMRMLPlotWidget`` through
the plot view node of `TrainingCurves.createViewNode`.
No Qt here, so it is tested in a headless scene.
"""

from __future__ import annotations

from typing import Sequence

import slicer
import vtk

from .events import ProgressState

LOSS_COLOR = (0.85, 0.33, 0.1)
DICE_COLOR = (0.0, 0.45, 0.74)


def fillTable(tableNode, xName: str, yName: str, xs: Sequence[float], ys: Sequence[float]) -> None:
    """Replace the table's content by two float columns."""
    table = vtk.vtkTable()
    for name, values in ((xName, xs), (yName, ys)):
        column = vtk.vtkFloatArray()
        column.SetName(name)
        for value in values:
            column.InsertNextValue(float(value))
        table.AddColumn(column)
    tableNode.SetAndObserveTable(table)


class TrainingCurves:
    """Loss and validation-Dice curves of one training run; see the module docstring."""

    def __init__(self, scene, name: str = "MedSSL training") -> None:
        self.scene = scene
        self.lossTable = self._hidden("vtkMRMLTableNode", f"{name} loss")
        self.diceTable = self._hidden("vtkMRMLTableNode", f"{name} Dice")
        self.chart = self._hidden("vtkMRMLPlotChartNode", name)
        self.viewNode = None
        self.chart.SetXAxisTitle("step")
        self.chart.SetYAxisTitle("loss / Dice")
        for table, column, color in ((self.lossTable, "loss", LOSS_COLOR), (self.diceTable, "Dice", DICE_COLOR)):
            series = self._hidden("vtkMRMLPlotSeriesNode", column)
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("step")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetColor(*color)
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
        self.update(ProgressState())

    def _hidden(self, className: str, name: str):
        node = self.scene.AddNewNodeByClass(className, name)
        node.SetHideFromEditors(True)
        node.SetSaveWithScene(False)
        return node

    def createViewNode(self):
        """A (hidden) plot view node showing the chart, for ``qMRMLPlotWidget.setMRMLPlotViewNode``."""
        if self.viewNode is None:
            self.viewNode = self._hidden("vtkMRMLPlotViewNode", f"{self.chart.GetName()} view")
            self.viewNode.SetPlotChartNodeID(self.chart.GetID())
        return self.viewNode

    def update(self, progress: ProgressState) -> None:
        """Show the curves collected so far."""
        fillTable(self.lossTable, "step", "loss", [s for s, _ in progress.losses], [v for _, v in progress.losses])
        fillTable(self.diceTable, "step", "Dice", [s for s, _, _ in progress.validations],
                  [v for _, v, _ in progress.validations])

    def nodes(self) -> list:
        """Every node this object added (for removal)."""
        series = [self.chart.GetNthPlotSeriesNode(i) for i in range(self.chart.GetNumberOfPlotSeriesNodes())]
        view = [self.viewNode] if self.viewNode is not None else []
        return [*view, self.chart, self.lossTable, self.diceTable, *series]

    def remove(self) -> None:
        for node in self.nodes():
            if node is not None and node.GetScene() is not None:
                self.scene.RemoveNode(node)
