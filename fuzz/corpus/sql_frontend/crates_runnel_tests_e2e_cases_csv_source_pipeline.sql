CREATE TABLE weather (city STRING, temp DOUBLE, ts TIMESTAMP(3)) WITH (connector = 'file', path = 'input.csv', format = 'csv');
CREATE TABLE output (city STRING, warm BOOLEAN, temp DOUBLE) WITH (connector = 'file', path = 'output.jsonl');
INSERT INTO output SELECT LOWER(city), temp > 10, temp FROM weather;
