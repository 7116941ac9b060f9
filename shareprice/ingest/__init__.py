"""Raw epochs into the `epochs` table: file import (JSON and JSONL, both chain formats) and the
demo / seed-scale generator.

Only ever inserts or replaces raw documents; what they mean is the backfill's business.

May import: shareprice.chain, shareprice.store, shareprice.errors.
"""
