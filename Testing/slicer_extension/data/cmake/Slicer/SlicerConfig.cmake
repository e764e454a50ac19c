# Stand-in for a Slicer build tree's SlicerConfig.cmake (find_package(Slicer) in the root CMakeLists.txt): it
# provides only what the extension's CMake code uses, with Slicer's and CTK's real macros (see ../README.md).
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Nothing.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Nothing.cmake)
