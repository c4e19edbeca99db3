"""The report of ``parley load``: the JSON document and summary table (:mod:`.build`,
schema ``loadgen/report.schema.json``) and the HTML page with plots (:mod:`.html`)."""
