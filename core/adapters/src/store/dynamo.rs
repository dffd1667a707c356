//! `DynamoStore`: the [`StateStore`] on one DynamoDB table, used by the Lambda functions.
//!
//! Table layout: key `pk` (S, HASH) + `sk` (S, RANGE); attributes `version` (N), `body` (S) and
//! `ttl` (N, epoch seconds; the table's TTL attribute). Conditional writes use `ConditionExpression`
//! (`attribute_not_exists(pk)` to create, `#v = :v` to update or delete the version read), and every
//! read is strongly consistent so a job always sees the write the previous job made.

use albra_core::ports::{Expect, Record, StateStore, StoreError};
use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::time::Duration;

const ATTR_PK: &str = "pk";
const ATTR_SK: &str = "sk";
const ATTR_VERSION: &str = "version";
const ATTR_BODY: &str = "body";
/// The table's TTL attribute.
pub const ATTR_TTL: &str = "ttl";

/// Error codes after which the same request may succeed later.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
];

/// The DynamoDB state store (see the module docs).
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    /// A client from the standard AWS configuration chain (environment, profile, instance role);
    /// `AWS_ENDPOINT_URL` points it at a local peer such as moto.
    pub async fn from_env(table: impl Into<String>) -> Self {
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::new(Client::new(&config), table)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Create the table (on-demand billing) and enable TTL on `ttl` unless they already exist; waits
    /// until the table is ACTIVE. For local development and tests; production tables come from the
    /// infrastructure template.
    pub async fn create_table_if_missing(&self) -> Result<(), StoreError> {
        let exists = match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(self.sdk_error("DescribeTable", e)),
        };
        if !exists {
            let key = |name: &str, kind: KeyType| {
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build()
            };
            let attr = |name: &str| {
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
            };
            let build_err = |e: aws_sdk_dynamodb::error::BuildError| {
                StoreError::Other(format!("dynamodb:{} CreateTable: {e}", self.table))
            };
            let created = self
                .client
                .create_table()
                .table_name(&self.table)
                .billing_mode(BillingMode::PayPerRequest)
                .key_schema(key(ATTR_PK, KeyType::Hash).map_err(build_err)?)
                .key_schema(key(ATTR_SK, KeyType::Range).map_err(build_err)?)
                .attribute_definitions(attr(ATTR_PK).map_err(build_err)?)
                .attribute_definitions(attr(ATTR_SK).map_err(build_err)?)
                .send()
                .await;
            match created {
                Ok(_) => {}
                // Somebody else created it between our describe and create: that is what we want.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_in_use_exception()) => {}
                Err(e) => return Err(self.sdk_error("CreateTable", e)),
            }
        }
        self.wait_active().await?;
        self.enable_ttl().await
    }

    async fn wait_active(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.sdk_error("DescribeTable", e))?;
            let status = out.table().and_then(|t| t.table_status()).cloned();
            if status == Some(TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "dynamodb:{}: table not ACTIVE after 120 s (status {status:?})",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn enable_ttl(&self) -> Result<(), StoreError> {
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeTimeToLive", e))?;
        let status = ttl
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status());
        if matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            return Ok(());
        }
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(ATTR_TTL)
            .build()
            .map_err(|e| {
                StoreError::Other(format!("dynamodb:{} UpdateTimeToLive: {e}", self.table))
            })?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| self.sdk_error("UpdateTimeToLive", e))?;
        Ok(())
    }

    fn sdk_error<E>(&self, op: &str, e: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let transient = match &e {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(se) => se
                .err()
                .code()
                .is_some_and(|c| TRANSIENT_CODES.contains(&c)),
            _ => false,
        };
        let detail = format!("dynamodb:{} {op}: {}", self.table, DisplayErrorContext(&e));
        if transient {
            StoreError::Unavailable(detail)
        } else {
            StoreError::Other(detail)
        }
    }

    fn decode(&self, item: &HashMap<String, AttributeValue>) -> Result<Record, StoreError> {
        let bad = |what: &str| {
            StoreError::Other(format!(
                "dynamodb:{}: item {:?}/{:?} has no valid {what}",
                self.table,
                item.get(ATTR_PK).and_then(|v| v.as_s().ok()),
                item.get(ATTR_SK).and_then(|v| v.as_s().ok()),
            ))
        };
        let s = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .ok_or_else(|| bad(name))
        };
        let version = item
            .get(ATTR_VERSION)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad(ATTR_VERSION))?;
        let expires_at = match item.get(ATTR_TTL) {
            None | Some(AttributeValue::Null(_)) => None,
            Some(v) => Some(
                v.as_n()
                    .ok()
                    .and_then(|n| n.parse::<i64>().ok())
                    .ok_or_else(|| bad(ATTR_TTL))?,
            ),
        };
        Ok(Record {
            pk: s(ATTR_PK)?,
            sk: s(ATTR_SK)?,
            version,
            body: s(ATTR_BODY)?,
            expires_at,
        })
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn conflict(pk: &str, sk: &str, detail: String) -> StoreError {
    StoreError::Conflict {
        pk: pk.to_string(),
        sk: sk.to_string(),
        detail,
    }
}

#[async_trait]
impl StateStore for DynamoStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(ATTR_PK, s(pk))
            .key(ATTR_SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.sdk_error("GetItem", e))?;
        out.item().map(|item| self.decode(item)).transpose()
    }

    async fn put(
        &self,
        pk: &str,
        sk: &str,
        body: &str,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError> {
        let new_version = match expect {
            Expect::Absent => 1,
            Expect::Version(v) => v + 1,
        };
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(ATTR_PK, s(pk))
            .item(ATTR_SK, s(sk))
            .item(ATTR_VERSION, n(new_version))
            .item(ATTR_BODY, s(body));
        if let Some(t) = expires_at {
            req = req.item(ATTR_TTL, n(t));
        }
        req = match expect {
            Expect::Absent => req.condition_expression("attribute_not_exists(pk)"),
            Expect::Version(v) => req
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", ATTR_VERSION)
                .expression_attribute_values(":v", n(v)),
        };
        match req.send().await {
            Ok(_) => Ok(new_version),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(conflict(
                    pk,
                    sk,
                    match expect {
                        Expect::Absent => "item already exists".to_string(),
                        Expect::Version(v) => {
                            format!("expected version {v}; the item changed or vanished")
                        }
                    },
                ))
            }
            Err(e) => Err(self.sdk_error("PutItem", e)),
        }
    }

    async fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError> {
        let want = match expect {
            Expect::Version(v) => v,
            Expect::Absent => {
                return Err(StoreError::Other(format!(
                "delete of {pk}/{sk} with Expect::Absent: a delete must name the version it read"
            )))
            }
        };
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(ATTR_PK, s(pk))
            .key(ATTR_SK, s(sk))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", ATTR_VERSION)
            .expression_attribute_values(":v", n(want))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(conflict(
                    pk,
                    sk,
                    format!("delete expected version {want}; the item changed or vanished"),
                ))
            }
            Err(e) => Err(self.sdk_error("DeleteItem", e)),
        }
    }

    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_names("#pk", ATTR_PK)
                .expression_attribute_values(":pk", s(pk))
                .set_exclusive_start_key(start.take());
            // begins_with needs a non-empty operand; an empty prefix means the whole partition.
            req = if sk_prefix.is_empty() {
                req.key_condition_expression("#pk = :pk")
            } else {
                req.key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
                    .expression_attribute_names("#sk", ATTR_SK)
                    .expression_attribute_values(":p", s(sk_prefix))
            };
            let page = req.send().await.map_err(|e| self.sdk_error("Query", e))?;
            for item in page.items() {
                out.push(self.decode(item)?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    fn describe(&self) -> String {
        format!("dynamodb:{}", self.table)
    }
}
