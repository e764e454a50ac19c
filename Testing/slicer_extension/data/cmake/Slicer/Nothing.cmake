# Nothing: the extension description and CPack packaging are not part of the install layout.
