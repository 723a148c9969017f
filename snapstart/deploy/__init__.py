"""``snapstart deploy``: SAM templates and zip packages.

    template.py  read a SAM template, resolve its intrinsics, validate -> a Plan
    apply.py     publish what changed, switch aliases, limits and triggers; idempotent
    package.py   zip packages (Lambda's limits, zip-slip, links and devices refused)
"""
