"""Primitive value nodes (Int, Float, String, Boolean) and the Note node.

The editor's own "PrimitiveNode" is a front-end widget holder that the workflow converter
folds away; these are real backend nodes whose value can be wired anywhere.
"""

from loom.nodeapi import Boolean, Float, Int, Node, Output, String


class PrimitiveInt(Node):
    display_name = "Int"
    category = "utils/primitive"
    inputs = {"value": Int(0, min=-(2**63), max=2**64 - 1, control_after_generate=True)}
    outputs = (Output("INT"),)

    def run(self, value):
        return (value,)


class PrimitiveFloat(Node):
    display_name = "Float"
    category = "utils/primitive"
    inputs = {"value": Float(0.0, min=-1e18, max=1e18, step=0.01)}
    outputs = (Output("FLOAT"),)

    def run(self, value):
        return (value,)


class PrimitiveString(Node):
    display_name = "String"
    category = "utils/primitive"
    inputs = {"value": String("")}
    outputs = (Output("STRING"),)

    def run(self, value):
        return (value,)


class PrimitiveStringMultiline(Node):
    display_name = "String (Multiline)"
    category = "utils/primitive"
    inputs = {"value": String("", multiline=True)}
    outputs = (Output("STRING"),)

    def run(self, value):
        return (value,)


class PrimitiveBoolean(Node):
    display_name = "Boolean"
    category = "utils/primitive"
    inputs = {"value": Boolean(False)}
    outputs = (Output("BOOLEAN"),)

    def run(self, value):
        return (value,)


NODES = [PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean]
