# What UseSlicer.cmake sets that the extension's modules need; PYTHON_EXECUTABLE and PYTHON_LIBRARIES come
# from the test (-D...). Install dirs as in Slicer's SlicerDirectories.cmake for Slicer 5.10 on Linux.
set(CTK_CMAKE_DIR ${CMAKE_CURRENT_LIST_DIR}/..)
set(Slicer_USE_PYTHONQT ON)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(PYTHONINTERP_FOUND TRUE)
set(PYTHONLIBS_FOUND TRUE)
include(${CTK_CMAKE_DIR}/ctkFunctionExtractOptimizedLibrary.cmake)
include(${CTK_CMAKE_DIR}/ctkMacroCompilePythonScript.cmake)
include(${CTK_CMAKE_DIR}/SlicerMacroBuildScriptedModule.cmake)
