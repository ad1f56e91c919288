"""The authors' released networks: their parameter tables and the maps onto the suite's.

``tables/<mode>.json`` holds, for each official code base (STM, STCN, HMMN, RMNet), every
tensor its released checkpoint holds (name and shape, as its own evaluation script builds the
network), the file's name and layout, and where the authors publish it. `vos.model.official.
convert` renames a released state dict onto the suite's network, strictly.
"""
