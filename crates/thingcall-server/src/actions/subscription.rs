//! Consumer groups and subscriptions (`amqp-subscription.md` §4).

use thingcall_core::{ApiError, ErrorCode, RequestId, UnixMillis};
use thingcall_wire::actions::subscription::FLAGS;
use thingcall_wire::actions::{
    ClientConnection, ConsumerGroupDto, ConsumerGroupPage, ConsumerGroupStatus,
    CreateConsumerGroup, CreateConsumerGroupResponse, CreateConsumerGroupSubscribeRelation,
    CreateSubscribeRelation, DeleteConsumerGroup, DeleteConsumerGroupSubscribeRelation,
    DeleteSubscribeRelation, QueryConsumerGroupByGroupId, QueryConsumerGroupList,
    QueryConsumerGroupStatus, QuerySubscribeRelation, ResetConsumerGroupPosition,
    SubscribeRelation, UpdateConsumerGroup, UpdateSubscribeRelation,
};
use thingcall_wire::{Action, Data, Format};

use super::{conflict, find_product, ok};
use crate::engine::{Engine, store_error};
use crate::ids::alnum;
use crate::store::{ConsumerGroup, Subscription};
use crate::subscribe::{AMQP, DEFAULT_GROUP, Subscribe};

fn subscribe(state: &Engine) -> Result<&Subscribe, ApiError> {
    state.subscribe.as_deref().ok_or_else(|| {
        ApiError::with_detail(
            ErrorCode::SystemException,
            "server-side subscription is not available on this server",
        )
    })
}

fn existing(s: &Subscribe, group_id: &str) -> Result<ConsumerGroup, ApiError> {
    s.group(group_id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotExistedConsumerGroup))
}

fn changeable(group_id: &str) -> Result<(), ApiError> {
    if group_id == DEFAULT_GROUP {
        return Err(ApiError::new(ErrorCode::DefaultConsumerGroupReadOnly));
    }
    Ok(())
}

fn dto(g: &ConsumerGroup) -> ConsumerGroupDto {
    ConsumerGroupDto {
        group_id: g.group_id.clone(),
        group_name: g.name.clone(),
        create_time: UnixMillis::new(g.created_ms).to_iso8601_millis(),
    }
}

pub(super) async fn create_group(
    state: &Engine,
    r: CreateConsumerGroup,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    if s.groups().iter().any(|g| g.name == r.group_name) {
        return Err(ApiError::new(ErrorCode::AlreadyExistedConsumerGroupName));
    }
    let group = ConsumerGroup {
        group_id: alnum(20),
        name: r.group_name,
        created_ms: state.now().get(),
    };
    s.create_group(group.clone())
        .await
        .map_err(conflict(ErrorCode::AlreadyExistedConsumerGroupName))?;
    Ok(ok(
        CreateConsumerGroup::NAME,
        format,
        rid,
        CreateConsumerGroupResponse {
            group_id: group.group_id,
        },
    ))
}

pub(super) fn list_groups(
    state: &Engine,
    r: QueryConsumerGroupList,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    let all: Vec<ConsumerGroup> = s
        .groups()
        .into_iter()
        .filter(|g| match (&r.group_name, r.fuzzy) {
            (Some(n), true) => g.name.contains(n.as_str()),
            (Some(n), false) => &g.name == n,
            (None, _) => true,
        })
        .collect();
    let total = i64::try_from(all.len()).unwrap_or(i64::MAX);
    let size = r.page_size;
    let skip = usize::try_from((r.current_page - 1).saturating_mul(size)).unwrap_or(usize::MAX);
    let groups = all
        .iter()
        .skip(skip)
        .take(usize::try_from(size).unwrap_or(0))
        .map(dto)
        .collect();
    Ok(ok(
        QueryConsumerGroupList::NAME,
        format,
        rid,
        ConsumerGroupPage {
            current_page: r.current_page,
            page_size: size,
            page_count: (total + size - 1) / size,
            total,
            groups,
        },
    ))
}

pub(super) fn query_group(
    state: &Engine,
    r: QueryConsumerGroupByGroupId,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let g = existing(subscribe(state)?, &r.group_id)?;
    Ok(ok(
        QueryConsumerGroupByGroupId::NAME,
        format,
        rid,
        Data(dto(&g)),
    ))
}

pub(super) async fn update_group(
    state: &Engine,
    r: UpdateConsumerGroup,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    changeable(&r.group_id)?;
    let mut g = existing(s, &r.group_id)?;
    if s.groups()
        .iter()
        .any(|o| o.name == r.new_group_name && o.group_id != g.group_id)
    {
        return Err(ApiError::new(ErrorCode::AlreadyExistedConsumerGroupName));
    }
    g.name = r.new_group_name;
    s.rename_group(g)
        .await
        .map_err(conflict(ErrorCode::AlreadyExistedConsumerGroupName))?;
    Ok(ok(UpdateConsumerGroup::NAME, format, rid, ()))
}

pub(super) async fn delete_group(
    state: &Engine,
    r: DeleteConsumerGroup,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    changeable(&r.group_id)?;
    existing(s, &r.group_id)?;
    s.delete_group(&r.group_id).await.map_err(store_error)?;
    Ok(ok(DeleteConsumerGroup::NAME, format, rid, ()))
}

pub(super) async fn reset_group(
    state: &Engine,
    r: ResetConsumerGroupPosition,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    existing(s, &r.group_id)?;
    let n = s.reset_group(&r.group_id).await.map_err(store_error)?;
    tracing::info!(group = %r.group_id, messages = n, "consumer group backlog cleared");
    Ok(ok(ResetConsumerGroupPosition::NAME, format, rid, ()))
}

pub(super) async fn group_status(
    state: &Engine,
    r: QueryConsumerGroupStatus,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    existing(s, &r.group_id)?;
    let waiting = s.backlog_len(&r.group_id).await.map_err(store_error)?;
    let status = s.broker.status(&r.group_id);
    let per_minute = i64::try_from(status.accepted_last_minute).unwrap_or(i64::MAX);
    let clients = status
        .clients
        .iter()
        .map(|c| {
            let n = i64::try_from(c.accepted_last_minute).unwrap_or(i64::MAX);
            ClientConnection {
                client_id: c.client_id.clone(),
                client_ip_port: c.addr.map(|a| a.to_string()).unwrap_or_default(),
                online_time: c.online_ms,
                real_time_per_minute: n,
                accumulated_per_minute: 0,
            }
        })
        .collect();
    Ok(ok(
        QueryConsumerGroupStatus::NAME,
        format,
        rid,
        ConsumerGroupStatus {
            accumulation_count: i64::try_from(waiting).unwrap_or(i64::MAX),
            consumer_speed: per_minute,
            real_time_per_minute: per_minute,
            accumulated_per_minute: 0,
            last_consumer_time: status
                .last_accepted_ms
                .map(|ms| UnixMillis::new(ms).to_iso8601_millis()),
            clients,
        },
    ))
}

/// Checks a subscription's product and groups, and turns it into the
/// stored form.
fn checked(state: &Engine, s: &Subscribe, r: SubscribeRelation) -> Result<Subscription, ApiError> {
    find_product(state, r.product_key.as_str())?;
    for g in &r.consumer_group_ids {
        existing(s, g)?;
    }
    let mut groups = r.consumer_group_ids.clone();
    groups.dedup();
    Ok(Subscription {
        product_key: r.product_key.as_str().to_owned(),
        kind: r.kind.clone(),
        flags: r
            .flags
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.clone())
            .collect(),
        group_ids: groups,
        mns: r.mns_configuration.clone(),
        subscribe_flags: r.subscribe_flags.clone(),
        created_ms: state.now().get(),
    })
}

pub(super) async fn create_relation(
    state: &Engine,
    r: CreateSubscribeRelation,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    let sub = checked(state, s, r.0)?;
    if s.subscription(&sub.product_key, &sub.kind).is_some() {
        return Err(ApiError::new(ErrorCode::AlreadyExistedSubscribeRelation));
    }
    s.put_subscription(sub).await.map_err(store_error)?;
    Ok(ok(CreateSubscribeRelation::NAME, format, rid, ()))
}

pub(super) async fn update_relation(
    state: &Engine,
    r: UpdateSubscribeRelation,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    let mut sub = checked(state, s, r.0)?;
    let Some(old) = s.subscription(&sub.product_key, &sub.kind) else {
        return Err(ApiError::new(ErrorCode::NotExistedSubscribeRelation));
    };
    sub.created_ms = old.created_ms;
    s.put_subscription(sub).await.map_err(store_error)?;
    Ok(ok(UpdateSubscribeRelation::NAME, format, rid, ()))
}

pub(super) fn query_relation(
    state: &Engine,
    r: QuerySubscribeRelation,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    let Some(sub) = s.subscription(r.product_key.as_str(), &r.kind) else {
        return Err(ApiError::new(ErrorCode::NotExistedSubscribeRelation));
    };
    let body = SubscribeRelation {
        product_key: r.product_key.clone(),
        kind: sub.kind.clone(),
        flags: FLAGS
            .iter()
            .map(|f| ((*f).to_owned(), sub.flags.iter().any(|s| s == f)))
            .collect(),
        consumer_group_ids: sub.group_ids.clone(),
        mns_configuration: sub.mns.clone(),
        subscribe_flags: sub.subscribe_flags.clone(),
        iot_instance_id: None,
    };
    Ok(ok(QuerySubscribeRelation::NAME, format, rid, body))
}

pub(super) async fn delete_relation(
    state: &Engine,
    r: DeleteSubscribeRelation,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let s = subscribe(state)?;
    if s.subscription(r.product_key.as_str(), &r.kind).is_none() {
        return Err(ApiError::new(ErrorCode::NotExistedSubscribeRelation));
    }
    s.delete_subscription(r.product_key.as_str(), &r.kind)
        .await
        .map_err(store_error)?;
    Ok(ok(DeleteSubscribeRelation::NAME, format, rid, ()))
}

/// Adds a group to (`add`) or removes it from a product's AMQP
/// subscription.
async fn edit_groups(
    state: &Engine,
    group_id: &str,
    product_key: &str,
    add: bool,
) -> Result<(), ApiError> {
    let s = subscribe(state)?;
    existing(s, group_id)?;
    let Some(mut sub) = s.subscription(product_key, AMQP) else {
        return Err(ApiError::new(ErrorCode::NotExistedSubscribeRelation));
    };
    let has = sub.group_ids.iter().any(|g| g == group_id);
    if add && !has {
        sub.group_ids.push(group_id.to_owned());
    } else if !add && has {
        sub.group_ids.retain(|g| g != group_id);
    } else {
        return Ok(());
    }
    s.put_subscription(sub).await.map_err(store_error)
}

pub(super) async fn add_group_to_relation(
    state: &Engine,
    r: CreateConsumerGroupSubscribeRelation,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    edit_groups(state, &r.consumer_group_id, r.product_key.as_str(), true).await?;
    Ok(ok(
        CreateConsumerGroupSubscribeRelation::NAME,
        format,
        rid,
        (),
    ))
}

pub(super) async fn remove_group_from_relation(
    state: &Engine,
    r: DeleteConsumerGroupSubscribeRelation,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    edit_groups(state, &r.consumer_group_id, r.product_key.as_str(), false).await?;
    Ok(ok(
        DeleteConsumerGroupSubscribeRelation::NAME,
        format,
        rid,
        (),
    ))
}
