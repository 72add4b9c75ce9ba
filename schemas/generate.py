"""Regenerate schemas/shards.schema.json from packer.output.shards (the single source).

python schemas/generate.py
"""

import json
from pathlib import Path

from packer.output.shards import describe

if __name__ == "__main__":
    path = Path(__file__).with_name("shards.schema.json")
    path.write_text(json.dumps(describe(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
