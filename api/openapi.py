"""The API's contract: every error an operation can answer, documented once per kind of route, and the
OpenAPI configuration (the docs UI served from an installed package, not a CDN)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from http import HTTPStatus
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, Link, OpenAPIResponse, Operation, Schema, SecurityScheme
from litestar.openapi.spec.enums import OpenAPIType
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler
from litestar.typing import FieldDefinition

from api.problems import PROBLEM_JSON

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.handlers import HTTPRouteHandler

__all__ = [
    "DOCS_ASSETS_PATH",
    "FieldProblem",
    "Problem",
    "StrictStructSchemaPlugin",
    "creates",
    "docs_assets",
    "openapi_config",
    "operation_id",
    "problems",
]

DOCS_ASSETS_PATH = "/api/schema/assets"
SCHEMA_PATH = "/api/schema"


def _swagger_dist() -> Path:
    """Swagger UI's own build, installed with the PyPI package ``swagger-ui-py`` (found without importing
    the package, whose adapters for other frameworks we do not use)."""
    spec = find_spec("swagger_ui")
    assert spec is not None and spec.submodule_search_locations, "swagger-ui-py is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "static"


PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON, a wrong type, an unknown or missing field, or a query parameter outside its range; "
    "`errors` names each field.",
    401: "The `Authorization: Bearer <API key>` header is missing or malformed, or the key is unknown or revoked.",
    403: "The API key lacks the scope this operation needs (`read`, `write` or `admin`).",
    404: "Nothing with this id (or one the body refers to) exists in the caller's tenant.",
    409: "It conflicts with something that exists (a taken slug, email or key).",
    413: "The body is larger than this operation accepts.",
    422: "Well-formed, but a value breaks a rule: one this schema declares (length, pattern, range, enum) or one "
    "only the service can check (an id in the body that does not exist, a rule across fields); `errors` has one "
    "entry per field.",
    503: "A backing service (database, Redis) is unavailable, or a report query ran past its time limit; "
    "retry later (a report: try a shorter range).",
}


class FieldProblem(msgspec.Struct):
    field: Annotated[str, msgspec.Meta(description="Where: a body path such as `fields[0].name`, or a parameter")]
    message: Annotated[str, msgspec.Meta(description="What is wrong with it")]


class Problem(msgspec.Struct):
    """RFC 9457 problem details: the body of every error answer."""

    type: Annotated[str, msgspec.Meta(description="Always `about:blank`: the status says what kind of problem")]
    title: Annotated[str, msgspec.Meta(description="The status phrase, e.g. `Not Found`")]
    status: Annotated[int, msgspec.Meta(ge=400, le=599, description="The HTTP status, repeated")]
    detail: Annotated[str, msgspec.Meta(description="What went wrong, for a person")]
    errors: (
        Annotated[list[FieldProblem], msgspec.Meta(description="One entry per field at fault (400 and 422)")]
        | msgspec.UnsetType
    ) = msgspec.UNSET


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses=`` for a route: each status it can answer, as ``application/problem+json``, and 503,
    which any operation answers while the database or Redis is away.

    Litestar would otherwise document its own validation body (``status_code, detail, extra``) for 400,
    which is not what the API answers."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=PROBLEM_DESCRIPTIONS.get(status) or HTTPStatus(status).description,
            generate_examples=False,
        )
        for status in sorted({*statuses, 503})
    }


AUTH = (401, 403)
"""Every tenant API operation: no key, a bad key, or a key without the scope."""
BODY = (400, 413, 422)
"""Every operation that takes a JSON body."""


def creates(parameter: str, *operation_ids: str, source: str = "$response.body#/id") -> type[Operation]:
    """``operation_class=`` for a route that creates a resource: OpenAPI links say that the new resource's
    id (``source``) is ``parameter`` of the operations that read, change and delete it, so generated
    clients and schemathesis' stateful phase can chain them."""

    @dataclass
    class CreatingOperation(Operation):
        def __post_init__(self) -> None:
            for status, response in (self.responses or {}).items():
                if status.startswith("2") and isinstance(response, OpenAPIResponse):
                    response.links = {
                        target: Link(operation_id=target, parameters={parameter: source}) for target in operation_ids
                    }

    return CreatingOperation


def operation_id(handler: HTTPRouteHandler, *_: object) -> str:
    """A handler's function name in camelCase (``create_contact`` → ``createContact``): stable ids that
    generated clients name their methods after and links refer to."""
    head, *rest = handler.handler_name.split("_")
    return head + "".join(word.title() for word in rest)


def docs_assets() -> ControllerRouterHandler:
    """Swagger UI's scripts and styles from the installed package, so the docs work without internet."""
    return create_static_files_router(
        path=DOCS_ASSETS_PATH, directories=[_swagger_dist()], include_in_schema=False, name="docs_assets"
    )


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Trailmark",
        version="0.1.0",
        description="Multi-tenant contact tracking. Errors are RFC 9457 problem details (`application/problem+json`).",
        path=SCHEMA_PATH,
        use_handler_docstrings=True,
        operation_id_creator=operation_id,
        render_plugins=[
            SwaggerRenderPlugin(
                path=["/", "/swagger"],
                js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS_PATH}/favicon-32x32.png'>",
            )
        ],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(type="http", scheme="bearer", description="Authorization: Bearer tm_…")
            }
        ),
    )


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's schema of a msgspec struct, plus what msgspec enforces and Litestar leaves out: a struct
    that forbids unknown fields says ``additionalProperties: false``; its docstring becomes its description."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        struct = field_definition.type_
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            items = _constrained_string_items(field.type)
            if items is not None and isinstance(prop := (schema.properties or {}).get(field.encode_name), Schema):
                for array in (prop, *(prop.one_of or ())):
                    if isinstance(array, Schema) and array.type == OpenAPIType.ARRAY:
                        array.items = items
            prop = (schema.properties or {}).get(field.encode_name)
            if isinstance(prop, Schema) and prop.minimum is None and _int_minimum(field.type) == 0:
                prop.minimum = 0  # Litestar leaves a zero minimum out of an optional or nullable integer
        if struct.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        if struct.__doc__ and not schema.description:
            schema.description = inspect.cleandoc(struct.__doc__).split("\n\n")[0].replace("\n", " ")
        return schema


def _int_minimum(field_type: msgspec.inspect.Type) -> int | None:
    """``ge`` of an ``Annotated[int, Meta(ge=…)]`` field (optional, nullable or not), else None."""
    options = field_type.types if isinstance(field_type, msgspec.inspect.UnionType) else (field_type,)
    for option in options:
        inner = option.type if isinstance(option, msgspec.inspect.Metadata) else option
        if isinstance(inner, msgspec.inspect.IntType) and inner.ge is not None:
            return inner.ge
    return None


def _constrained_string_items(field_type: msgspec.inspect.Type) -> Schema | None:
    """The item schema of a list of constrained strings, which Litestar documents as plain strings."""
    while isinstance(field_type, msgspec.inspect.Metadata | msgspec.inspect.UnionType):
        if isinstance(field_type, msgspec.inspect.Metadata):
            field_type = field_type.type
        else:
            lists = [t for t in field_type.types if isinstance(t, msgspec.inspect.ListType | msgspec.inspect.Metadata)]
            if len(lists) != 1:
                return None
            field_type = lists[0]
    if not isinstance(field_type, msgspec.inspect.ListType):
        return None
    item = field_type.item_type
    if isinstance(item, msgspec.inspect.Metadata):
        item = item.type
    if not isinstance(item, msgspec.inspect.StrType) or (item.pattern, item.min_length, item.max_length) == (
        None,
        None,
        None,
    ):
        return None
    return Schema(type=OpenAPIType.STRING, pattern=item.pattern, min_length=item.min_length, max_length=item.max_length)
