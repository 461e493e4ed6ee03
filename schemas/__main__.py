from . import write_json_schemas

for p in write_json_schemas():
    print(p)
