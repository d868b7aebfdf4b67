"""The sample CRM package (accounts, contacts, deals) used by ``loomwork demo``."""
from pathlib import Path

PATH = Path(__file__).parent
