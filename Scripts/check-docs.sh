#!/usr/bin/env bash
# The documentation builds and is complete: each DocC catalog builds with
# warnings as errors (a broken symbol link fails it), and every public symbol
# declared in the package's modules has a doc comment of its own (not one
# inherited from a protocol), every function one line per parameter.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

modules=(BatchNormKernels BatchNormDifferentiation BatchNormMPI BatchNormReference)
for module in "${modules[@]}"; do
    swift package generate-documentation --target "$module" --warnings-as-errors > ".build/docc-$module.log" 2>&1 \
        || { cat ".build/docc-$module.log"; echo "check-docs: the $module catalog does not build"; exit 1; }
    echo "check-docs: $module: the DocC catalog builds"
done

swift package dump-symbol-graph --minimum-access-level public > .build/symbol-graph.log 2>&1 \
    || { cat .build/symbol-graph.log; exit 1; }
python3 - "$(swift build --show-bin-path)/../symbolgraph" "${modules[@]}" <<'PY'
import glob, json, sys
directory, modules = sys.argv[1], sys.argv[2:]
functions = {"swift.func", "swift.method", "swift.type.method", "swift.init", "swift.func.op"}
problems = []
for module in modules:
    for path in glob.glob(f"{directory}/{module}.symbols.json") + glob.glob(f"{directory}/{module}@*.symbols.json"):
        for symbol in json.load(open(path))["symbols"]:
            if f"/Sources/{module}/" not in symbol.get("location", {}).get("uri", ""):
                continue                      # synthesized, or declared in another module
            name = f"{module}: {'/'.join(symbol['pathComponents'])}"
            doc = symbol.get("docComment")
            if not doc or doc.get("module", module) != module:
                problems.append(f"{name}: no doc comment of its own")
                continue
            text = "\n".join(line["text"] for line in doc["lines"])
            if symbol["kind"]["identifier"] in functions:
                for parameter in symbol.get("functionSignature", {}).get("parameters", []):
                    names = {parameter["name"], parameter.get("internalName", parameter["name"])}
                    if not any(f"- {n}:" in text or f"- Parameter {n}:" in text for n in names):
                        problems.append(f"{name}: parameter {parameter['name']} undocumented")
for problem in problems:
    print("check-docs:", problem)
if problems:
    sys.exit(f"check-docs: {len(problems)} public symbols or parameters undocumented")
print("check-docs: every public symbol and parameter of", ", ".join(modules), "is documented")
PY
