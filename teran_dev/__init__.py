"""Development tools over the platform: the demo (`make demo`), the search page's demo
server (`make serve`), the local microservice topology (`make up`) and the one launcher they,
the benchmarks and the tests start the platform with. Never imported by the services."""
