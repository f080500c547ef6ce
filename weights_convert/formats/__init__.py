"""File formats only: schema, text prototxt, binary caffemodel, HDF5. Nothing here runs a network."""
