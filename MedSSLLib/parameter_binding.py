"""The parameter-node lifecycle of a module panel, written once for MedSSLSegment and MedSSLTrain.

Follows Slicer's scripted-module template (``Utilities/Templates/Modules/Scripted/TemplateKey.py``:
``initializeParameterNode``, ``setParameterNode``, ``enter``/``exit``, ``onSceneStartClose``/``onSceneEndClose``):
the ``@parameterNodeWrapper`` node is connected to the .ui widgets (``connectGui``/``disconnectGui``) and its
ModifiedEvent calls the panel's ``update``; closing the scene first stops the panel's jobs (results must not
land in the next scene) and re-binds a fresh node afterwards if the module is shown.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import slicer
import vtk
from slicer.util import VTKObservationMixin


class ParameterBinding(VTKObservationMixin):
    """Binds ``getParameterNode()`` to ``ui``; ``update()`` runs on every change, ``initialize(node)`` once per
    bind (defaults that depend on the scene), ``onSceneClose()`` before the scene is cleared."""

    def __init__(self, ui, getParameterNode: Callable[[], Any], update: Callable[[], None],
                 isEntered: Callable[[], bool], onSceneClose: Callable[[], None] = lambda: None,
                 initialize: Callable[[Any], None] = lambda node: None) -> None:
        VTKObservationMixin.__init__(self)
        self.ui, self._getParameterNode, self._update = ui, getParameterNode, update
        self._isEntered, self._onSceneClose, self._initialize = isEntered, onSceneClose, initialize
        self.node: Optional[Any] = None
        self._guiTag = None
        self._connected = False  # GUI connectors and ModifiedEvent observer in place for self.node
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._sceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self._sceneEndClose)

    def _onModified(self, caller=None, event=None) -> None:
        self._update()

    def bind(self, node: Optional[Any]) -> None:
        """Show ``node`` in the panel (None: show nothing)."""
        self.unbind()
        self.node = node
        if node is not None:
            self._guiTag = node.connectGui(self.ui)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self._onModified)
            self._connected = True
            self._update()

    def unbind(self) -> None:
        """Stop updating the panel from the node (a running job still reports to it)."""
        if self.node is not None and self._connected:
            self.node.disconnectGui(self._guiTag)
            self._guiTag = None
            self.removeObserver(self.node, vtk.vtkCommand.ModifiedEvent, self._onModified)
            self._connected = False

    def enter(self) -> None:
        """Bind the module's (singleton) parameter node, e.g. when the module is shown."""
        node = self._getParameterNode()
        self._initialize(node)
        self.bind(node)

    def _sceneStartClose(self, caller, event) -> None:
        self._onSceneClose()
        self.unbind()
        self.node = None

    def _sceneEndClose(self, caller, event) -> None:
        if self._isEntered():
            self.enter()

    def cleanup(self) -> None:
        self.unbind()
        self.removeObservers()
