#!/usr/bin/env python3
"""Generates vendor/fhir-r4/structure.json from the official FHIR R4 (4.0.1) JSON schema
(http://hl7.org/fhir/R4/fhir.schema.json.zip, kept at tests/fixtures/fhir.schema.json).

Usage: python3 vendor/fhir-r4/generate.py tests/fixtures/fhir.schema.json > vendor/fhir-r4/structure.json

Output: {"primitives": {name: {"json": "string|number|boolean", "pattern": regex}},
         "types": {name: {"resource": bool, "elements": {name: [type, array, required, enum|null]},
                          "choices": {base: [member names]}}}}
Descriptions are dropped; `_name` primitive-extension siblings are implied, not listed.
"""
import json, re, sys

schema = json.load(open(sys.argv[1]))
defs = schema["definitions"]
resources = set(schema["discriminator"]["mapping"].keys())

PRIMS = {}
for name, d in defs.items():
    if name[0].islower():
        js = d.get("type", "string")
        PRIMS[name] = {"json": js, "pattern": d.get("pattern")}
# base64Binary has no pattern at the top level of the 4.0.1 schema; its choice members carry
# the R4 regex (R4 datatypes §2.24.0.1).
PRIMS["base64Binary"]["pattern"] = defs["Extension"]["properties"]["valueBase64Binary"]["pattern"]
# The schema's boolean/unsignedInt patterns are mis-anchored; JSON booleans and numbers are
# checked by JSON type and range instead, so their patterns are not used.
for p in ("boolean", "decimal", "integer", "positiveInt", "unsignedInt"):
    PRIMS[p]["pattern"] = None
PRIMS["xhtml"] = {"json": "string", "pattern": None}

cap = {n[0].upper() + n[1:]: n for n in defs if n[0].isalpha() and "_" not in n}

def ref_name(r):
    return r.split("/")[-1]

types = {}
for name, d in defs.items():
    if not name[0].isupper() or "properties" not in d:
        continue
    props = d["properties"]
    required = set(d.get("required", []))
    elements = {}
    for pname, p in props.items():
        if pname.startswith("_") or pname == "resourceType":
            continue
        array = p.get("type") == "array"
        item = p["items"] if array else p
        enum = item.get("enum")
        if "$ref" in item:
            t = ref_name(item["$ref"])
        elif enum is not None:
            t = "code"
        else:
            # an inline primitive (choice members): the type from the name's suffix
            t = None
            for suffix, tn in cap.items():
                if pname.endswith(suffix) and tn in PRIMS and (t is None or len(tn) > len(t)):
                    t = tn
            if t is None:
                t = "xhtml" if pname == "div" else "string"
        elements[pname] = [t, array, pname in required, enum]
    # Choice types (R4 formats §2.1.0.2, `[x]`): members share a base name followed by a type
    # name and carry the same description.
    groups = {}
    for pname, p in props.items():
        if pname.startswith("_") or p.get("type") == "array":
            continue  # choice elements are never repeating (R4 formats §2.1.0.2)
        for suffix, tn in cap.items():
            if pname.endswith(suffix) and len(pname) > len(suffix):
                base = pname[: -len(suffix)]
                if base[0].islower():
                    groups.setdefault((base, p.get("description")), []).append(pname)
    choices = {}
    for (base, _), members in groups.items():
        members = sorted(set(members))
        if len(members) >= 2 and base not in props:
            choices[base] = members
    types[name] = {"resource": name in resources, "elements": elements, "choices": choices}

# Extension.url is 1..1 in StructureDefinition-Extension (an XML attribute, so the JSON
# schema leaves it out of "required").
types["Extension"]["elements"]["url"][2] = True

json.dump({"primitives": PRIMS, "types": types}, sys.stdout, separators=(",", ":"), sort_keys=True)
